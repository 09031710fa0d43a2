"""The lecture's forward pass, chunked into steps small enough to differentiate one at a time.

Every name here gets a gradient d<name>. B batch (n), T block_size, E n_embd, H n_hidden, V vocab.
"""
emb = C[Xb]  # (B, T, E) embed the characters
embcat = emb.view(emb.shape[0], -1)  # (B, T*E) concatenate the vectors
# linear layer 1
hprebn = embcat @ W1 + b1  # (B, H) hidden layer pre-activation
# batchnorm layer
bnmeani = 1/n*hprebn.sum(0, keepdim=True)  # (1, H)
bndiff = hprebn - bnmeani  # (B, H)
bndiff2 = bndiff**2  # (B, H)
bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)  # (1, H) Bessel's correction: n-1, not n
bnvar_inv = (bnvar + 1e-5)**-0.5  # (1, H)
bnraw = bndiff * bnvar_inv  # (B, H)
hpreact = bngain * bnraw + bnbias  # (B, H)
# non-linearity
h = torch.tanh(hpreact)  # (B, H) hidden layer
# linear layer 2
logits = h @ W2 + b2  # (B, V) output layer
# cross entropy loss (same as F.cross_entropy(logits, Yb))
logit_maxes = logits.max(1, keepdim=True).values  # (B, 1)
norm_logits = logits - logit_maxes  # (B, V) subtract max for numerical stability
counts = norm_logits.exp()  # (B, V)
counts_sum = counts.sum(1, keepdims=True)  # (B, 1)
counts_sum_inv = counts_sum**-1  # (B, 1) (1.0 / counts_sum would not be bitwise equal)
probs = counts * counts_sum_inv  # (B, V)
logprobs = probs.log()  # (B, V)
loss = -logprobs[range(n), Yb].mean()  # ()

"""The lecture's forward pass up to the logits, then PyTorch's fused cross-entropy.

B batch (n), T block_size, E n_embd, H n_hidden, V vocab.
"""
emb = C[Xb]  # (B, T, E)
embcat = emb.view(emb.shape[0], -1)  # (B, T*E)
hprebn = embcat @ W1 + b1  # (B, H)
bnmeani = 1/n*hprebn.sum(0, keepdim=True)  # (1, H)
bndiff = hprebn - bnmeani  # (B, H)
bndiff2 = bndiff**2  # (B, H)
bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)  # (1, H)
bnvar_inv = (bnvar + 1e-5)**-0.5  # (1, H)
bnraw = bndiff * bnvar_inv  # (B, H)
hpreact = bngain * bnraw + bnbias  # (B, H)
h = torch.tanh(hpreact)  # (B, H)
logits = h @ W2 + b2  # (B, V)
loss = F.cross_entropy(logits, Yb)  # () the whole cross-entropy in one op: one gradient to derive

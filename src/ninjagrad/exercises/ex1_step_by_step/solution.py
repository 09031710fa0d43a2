# ninjagrad exercise 1 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 1` and `ninjagrad hint NAME` first.
#
# The forward's tensors and parameters are in scope under the lecture's names, with torch, F, n, Xb, Yb.
# Every gradient d<name> has the shape of <name>. Read it bottom-up against the forward pass.

# loss = -logprobs[range(n), Yb].mean(): only the n picked entries matter, each with weight -1/n
dlogprobs = torch.zeros_like(logprobs)  # (B, V)
dlogprobs[range(n), Yb] = -1.0/n
# logprobs = probs.log()
dprobs = (1.0 / probs) * dlogprobs  # (B, V)
# probs = counts * counts_sum_inv: counts_sum_inv was broadcast along axis 1, so sum over it
dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)  # (B, 1)
dcounts = counts_sum_inv * dprobs  # (B, V) first of counts' two uses
# counts_sum_inv = counts_sum**-1
dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv  # (B, 1)
# counts_sum = counts.sum(1, keepdims=True): the sum hands its gradient to every element of the row
dcounts += torch.ones_like(counts) * dcounts_sum  # (B, V) second use of counts
# counts = norm_logits.exp()
dnorm_logits = counts * dcounts  # (B, V)
# norm_logits = logits - logit_maxes
dlogits = dnorm_logits.clone()  # (B, V) clone: dlogits gets a second branch below
dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)  # (B, 1) ~0: the max does not change the softmax
# logit_maxes = logits.max(1, keepdim=True).values: the gradient flows to the max's position only
dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes
# logits = h @ W2 + b2
dh = dlogits @ W2.T  # (B, H)
dW2 = h.T @ dlogits  # (H, V)
db2 = dlogits.sum(0)  # (V,)
# h = torch.tanh(hpreact)
dhpreact = (1.0 - h**2) * dh  # (B, H)
# hpreact = bngain * bnraw + bnbias
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)  # (1, H)
dbnraw = bngain * dhpreact  # (B, H)
dbnbias = dhpreact.sum(0, keepdim=True)  # (1, H)
# bnraw = bndiff * bnvar_inv
dbndiff = bnvar_inv * dbnraw  # (B, H) first of bndiff's two uses
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)  # (1, H)
# bnvar_inv = (bnvar + 1e-5)**-0.5
dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv  # (1, H)
# bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True): Bessel's n-1 stays in the gradient
dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar  # (B, H)
# bndiff2 = bndiff**2
dbndiff += (2*bndiff) * dbndiff2  # (B, H) second use of bndiff
# bndiff = hprebn - bnmeani
dhprebn = dbndiff.clone()  # (B, H) clone: the path through the mean is added below
dbnmeani = (-dbndiff).sum(0, keepdim=True)  # (1, H) keepdim: bnmeani is (1, H)
# bnmeani = 1/n*hprebn.sum(0, keepdim=True)
dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)  # (B, H)
# hprebn = embcat @ W1 + b1
dembcat = dhprebn @ W1.T  # (B, T*E)
dW1 = embcat.T @ dhprebn  # (T*E, H)
db1 = dhprebn.sum(0)  # (H,) zero up to rounding: batchnorm subtracts any bias again
# embcat = emb.view(emb.shape[0], -1)
demb = dembcat.view(emb.shape)  # (B, T, E)
# emb = C[Xb]: every use of a row of C adds to its gradient, repeats included
dC = torch.zeros_like(C)  # (V, E)
for k in range(Xb.shape[0]):
    for j in range(Xb.shape[1]):
        ix = Xb[k, j]
        dC[ix] += demb[k, j]

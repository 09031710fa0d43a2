# ninjagrad exercise 8 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 8` and `ninjagrad hint NAME` first.
#
# dh1 is given. The batchnorm's statistics run over dims 0 and 1, so m = n*4 values per channel;
# everything per channel is (1, 1, H) and sums over (0, 1) with keepdim=True undo its broadcasts.
m = hprebn1.shape[0] * hprebn1.shape[1]  # 128 values per channel: the batch times the 4 groups
dhpreact1 = (1.0 - h1**2) * dh1  # (B, 4, H)  h1 = tanh(hpreact1)
dbngain1 = (bnraw1 * dhpreact1).sum((0, 1)).view(bngain1.shape)  # (1, H)  broadcast over B and groups
dbnbias1 = dhpreact1.sum((0, 1)).view(bnbias1.shape)  # (1, H)
dbnraw1 = bngain1 * dhpreact1  # (B, 4, H)
bnstd1 = torch.sqrt(bnvar1 + 1e-5)  # (1, 1, H)
dbnvar1 = (-(hprebn1 - bnmean1) / bnstd1**2 * dbnraw1).sum((0, 1), keepdim=True) * 0.5 / bnstd1  # (1, 1, H)
dbnmean1 = -(dbnraw1 / bnstd1).sum((0, 1), keepdim=True)  # (1, 1, H)
dhprebn1 = dbnraw1 / bnstd1  # (B, 4, H)  the direct branch ...
dhprebn1 += dbnmean1 / m  # ... the mean's: 1/m to each of the m values
dhprebn1 += dbnvar1 * 2 * (hprebn1 - bnmean1) / (m - 1)  # ... the variance's, with Bessel's m-1
dW1 = x1.view(-1, x1.shape[-1]).T @ dhprebn1.view(-1, dhprebn1.shape[-1])  # (2E, H)
dx1 = dhprebn1 @ W1.T  # (B, 4, 2E)
demb = dx1.view(emb.shape)  # (B, 8, E)  flatten-consecutive is a view: its backward is the inverse view
dC = torch.zeros_like(C)  # (V, E)
dC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))  # every use of a row adds to it, repeats included

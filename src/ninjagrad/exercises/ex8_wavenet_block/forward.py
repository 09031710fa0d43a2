"""Part 5's WaveNet forward in plain torch: three levels of flatten-consecutive -> linear -> batchnorm -> tanh.

Exercise 8 asks for the first level's gradients, from dh1 (given) down to dC. Its batchnorm runs
over (B, T, C) inputs: the statistics are over dims 0 and 1, so each channel averages n*4 values.
B batch (n), E n_embd, H n_hidden, V vocab; the context of 8 characters is merged two at a time.
"""
emb = C[Xb]  # (B, 8, E) embed the characters
x1 = emb.view(emb.shape[0], block_size // 2, 2 * n_embd)  # (B, 4, 2E) FlattenConsecutive(2): pairs side by side
hprebn1 = x1 @ W1  # (B, 4, H) no bias: batchnorm's bias takes its place
bnmean1 = hprebn1.mean((0, 1), keepdim=True)  # (1, 1, H) over the batch and the 4 groups
bnvar1 = hprebn1.var((0, 1), keepdim=True)  # (1, 1, H) Bessel-corrected: 1/(n*4 - 1), as part 5
bnraw1 = (hprebn1 - bnmean1) / torch.sqrt(bnvar1 + 1e-5)  # (B, 4, H)
hpreact1 = bngain1 * bnraw1 + bnbias1  # (B, 4, H) bngain1, bnbias1 (1, H) broadcast over B and the groups
h1 = torch.tanh(hpreact1)  # (B, 4, H)
# levels 2 and 3, one line per step (their backward is not asked for)
x2 = h1.view(h1.shape[0], 2, 2 * n_hidden)  # (B, 2, 2H)
hprebn2 = x2 @ W2  # (B, 2, H)
h2 = torch.tanh(bngain2 * (hprebn2 - hprebn2.mean((0, 1), keepdim=True))
                / torch.sqrt(hprebn2.var((0, 1), keepdim=True) + 1e-5) + bnbias2)  # (B, 2, H)
x3 = h2.view(h2.shape[0], 2 * n_hidden)  # (B, 2H) the last merge leaves one group: squeezed, as part 5
hprebn3 = x3 @ W3  # (B, H)
h3 = torch.tanh(bngain3 * (hprebn3 - hprebn3.mean(0, keepdim=True))
                / torch.sqrt(hprebn3.var(0, keepdim=True) + 1e-5) + bnbias3)  # (B, H)
logits = h3 @ W4 + b4  # (B, V)
loss = F.cross_entropy(logits, Yb)  # ()

# ninjagrad exercise 8: the WaveNet's first level, flatten-consecutive + linear + batchnorm + tanh
#
# Replace each `...` with the gradient of the loss with respect to that variable. dh1 is given.
# In scope: the forward's tensors (see `ninjagrad explain forward --exercise 8`), the WaveNet's
# parameters (C, W1, bngain1, bnbias1, ...), Xb, Yb, n (batch size 32), n_embd, n_hidden, block_size,
# and torch, F. d<name> must have <name>'s shape. The batchnorm sees (B, 4, H) inputs: its statistics
# run over dims 0 and 1, so each channel averages n*4 = 128 values, and the variance divides by 127.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint NAME --exercise 8

dhpreact1 = ...  # h1 = torch.tanh(hpreact1)
dbngain1 = ...   # hpreact1 = bngain1 * bnraw1 + bnbias1   (bngain1 is (1, H))
dbnbias1 = ...
dbnraw1 = ...
dbnvar1 = ...    # bnraw1 = (hprebn1 - bnmean1) / torch.sqrt(bnvar1 + 1e-5)
dbnmean1 = ...
dhprebn1 = ...   # three branches: bnraw1, bnmean1 = hprebn1.mean((0, 1)), bnvar1 = hprebn1.var((0, 1))
dW1 = ...        # hprebn1 = x1 @ W1
dx1 = ...
demb = ...       # x1 = emb.view(emb.shape[0], block_size // 2, 2 * n_embd)
dC = ...         # emb = C[Xb]

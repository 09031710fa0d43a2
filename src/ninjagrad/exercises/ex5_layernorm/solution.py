# ninjagrad exercise 5 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 5` and `ninjagrad hint NAME` first.
#
# dlogits is given. Sums over B and T give a parameter's gradient (it was broadcast there); sums over
# the channels (-1, keepdim=True) undo a per-position statistic's broadcast over C.
dln = dlogits @ W.T  # (B, T, C)  logits = ln @ W
dW = ln.view(-1, C).T @ dlogits.view(-1, V)  # (C, V)  every position's outer product, summed
dln_w = (dln * xhat).sum((0, 1))  # (C,)  ln = xhat * ln_w + ln_b
dln_b = dln.sum((0, 1))  # (C,)
dxhat = dln * ln_w  # (B, T, C)
drstd = (dxhat * xdiff).sum(-1, keepdim=True)  # (B, T, 1)  xhat = xdiff * rstd
dxdiff = dxhat * rstd  # (B, T, C)  ... one branch of xdiff; xdiff2 adds the other
dxvar = -0.5 * (xvar + 1e-5)**-1.5 * drstd  # (B, T, 1)  rstd = (xvar + eps)**-0.5
dxdiff2 = torch.ones_like(xdiff2) / C * dxvar  # (B, T, C)  xvar = xdiff2.mean(-1): 1/C to every channel
dxdiff += 2 * xdiff * dxdiff2  # (B, T, C)  xdiff2 = xdiff**2
dxmean = -dxdiff.sum(-1, keepdim=True)  # (B, T, 1)  xdiff = x - xmean
dx = dxdiff.clone()  # (B, T, C)  the direct branch of x - xmean ...
dx += dxmean / C  # ... plus the branch through the mean: xmean = x.mean(-1)

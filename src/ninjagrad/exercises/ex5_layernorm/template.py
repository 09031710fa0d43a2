# ninjagrad exercise 5: layernorm, step by step
#
# Replace each `...` with the gradient of the loss with respect to that variable. dlogits is given.
# In scope: the forward's tensors (see `ninjagrad explain forward --exercise 5`), the parameters x,
# ln_w, ln_b, W, the targets Y, the sizes B, T, C, V, and torch, F. d<name> must have <name>'s shape.
# Layernorm works per position: its statistics are over the channels (dim -1), so the per-position
# tensors are (B, T, 1), and the parameters ln_w, ln_b (C,) are broadcast over B and T.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint NAME --exercise 5

dln = ...     # logits = ln @ W
dW = ...
dln_w = ...   # ln = xhat * ln_w + ln_b
dln_b = ...
dxhat = ...
drstd = ...   # xhat = xdiff * rstd
dxdiff = ...  # ... xdiff is used twice: add the branch through xdiff2 later with +=
dxvar = ...   # rstd = (xvar + 1e-5)**-0.5
dxdiff2 = ... # xvar = xdiff2.mean(-1, keepdim=True)
dxdiff = ...  # xdiff2 = xdiff**2  (dxdiff += ...)
dxmean = ...  # xdiff = x - xmean
dx = ...      # xdiff = x - xmean  and  xmean = x.mean(-1, keepdim=True)

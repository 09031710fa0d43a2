# ninjagrad exercise 7: one causal self-attention head, step by step
#
# Replace each `...` with the gradient of the loss with respect to that variable. dlogits is given.
# In scope: the forward's tensors (see `ninjagrad explain forward --exercise 7`), the parameters x,
# Wq, Wk, Wv, Wo, the data Y and tril, the sizes B, T, C, hs, V, and torch, F. d<name> must have
# <name>'s shape. A batched matmul y = a @ b (B, T, .) works per batch element: da = dy @ b^T,
# db = a^T @ dy with the last two dims transposed; a weight shared by all of them sums their gradients.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint NAME --exercise 7

dout = ...        # logits = out @ Wo
dWo = ...
datt = ...        # out = att @ v
dv = ...
dwei_masked = ... # att = F.softmax(wei_masked, dim=-1)
dwei = ...        # wei_masked = wei.masked_fill(tril == 0, float("-inf"))
dq = ...          # wei = q @ k.transpose(-2, -1) * hs**-0.5
dk = ...
dWq = ...         # q = x @ Wq
dWk = ...         # k = x @ Wk
dWv = ...         # v = x @ Wv
dx = ...          # x feeds q, k and v: three branches (dx += ...)

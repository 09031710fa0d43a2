# ninjagrad exercise 1: backprop through every step of the lecture's forward pass, one by one
#
# Replace each `...` with the gradient of the loss with respect to that variable. In scope: the
# forward's tensors and parameters under the lecture's names (see `ninjagrad explain forward` or
# forward.py), plus torch, F, n (batch size), Xb, Yb, batch_size, n_embd, n_hidden, block_size,
# vocab_size. d<name> must have the shape of <name>.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint NAME --level 1
#
# The checker judges each d<name> after its last assignment and then replaces it by autograd's value,
# so one mistake never cascades into the lines below.

# -- cross entropy ----------------------------------------------------------------------------
dlogprobs = ...       # loss = -logprobs[range(n), Yb].mean()
dprobs = ...          # logprobs = probs.log()
dcounts_sum_inv = ... # probs = counts * counts_sum_inv
dcounts = ...         # ... counts is used twice: add the second branch later with +=
dcounts_sum = ...     # counts_sum_inv = counts_sum**-1
dcounts = ...         # counts_sum = counts.sum(1, keepdims=True)  (dcounts += ...)
dnorm_logits = ...    # counts = norm_logits.exp()
dlogit_maxes = ...    # norm_logits = logits - logit_maxes
dlogits = ...         # norm_logits = logits - logit_maxes  and  logit_maxes = logits.max(1, ...)
# -- second linear layer ----------------------------------------------------------------------
dh = ...              # logits = h @ W2 + b2
dW2 = ...
db2 = ...
# -- tanh -------------------------------------------------------------------------------------
dhpreact = ...        # h = torch.tanh(hpreact)
# -- batchnorm --------------------------------------------------------------------------------
dbngain = ...         # hpreact = bngain * bnraw + bnbias
dbnbias = ...
dbnraw = ...
dbnvar_inv = ...      # bnraw = bndiff * bnvar_inv
dbnvar = ...          # bnvar_inv = (bnvar + 1e-5)**-0.5
dbndiff2 = ...        # bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)
dbndiff = ...         # bndiff2 = bndiff**2  and  bnraw = bndiff * bnvar_inv
dbnmeani = ...        # bndiff = hprebn - bnmeani
dhprebn = ...         # bndiff = hprebn - bnmeani  and  bnmeani = 1/n*hprebn.sum(0, keepdim=True)
# -- first linear layer -----------------------------------------------------------------------
dembcat = ...         # hprebn = embcat @ W1 + b1
dW1 = ...
db1 = ...
# -- embedding --------------------------------------------------------------------------------
demb = ...            # embcat = emb.view(emb.shape[0], -1)
dC = ...              # emb = C[Xb]

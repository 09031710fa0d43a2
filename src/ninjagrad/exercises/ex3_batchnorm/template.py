# ninjagrad exercise 3: batchnorm backward in one expression
#
# The forward's batchnorm, in one line:
#   hpreact = bngain * (hprebn - hprebn.mean(0, keepdim=True))
#             / torch.sqrt(hprebn.var(0, keepdim=True, unbiased=True) + 1e-5) + bnbias
# dhpreact (autograd's) is given. Write dhprebn (shape (n, n_hidden)) in one expression; you may use
# bngain, bnvar_inv, bnraw, hprebn, n. Mind Bessel's n-1 and the path through the mean:
# `ninjagrad explain batchnorm`.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint hprebn --exercise 3

dhprebn = ...

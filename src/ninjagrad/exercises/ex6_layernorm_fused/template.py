# ninjagrad exercise 6: layernorm backward in one expression
#
# The forward's layernorm, in one line (per position, over the C channels, biased variance):
#   ln = ln_w * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) + ln_b
# dln (autograd's) is given. Write dx (shape (B, T, C)) in one expression; you may use ln_w, xhat,
# rstd, x, C. Like batchnorm's, but the sums run over the channels (dim -1) and there is no Bessel
# correction: `ninjagrad explain layernorm`.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint x --exercise 6

dx = ...

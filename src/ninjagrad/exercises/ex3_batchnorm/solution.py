# ninjagrad exercise 3 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 3` and `ninjagrad explain batchnorm` first.
#
# hpreact = bngain * (hprebn - mean) / sqrt(var + eps) + bnbias, var with Bessel's 1/(n-1).
# With bnraw = xhat: dx = gain * var_inv / n * (n*dout - sum_B dout - n/(n-1) * xhat * sum_B(dout * xhat))
# The middle term is the path through the mean; the last the path through the variance.
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))

# ninjagrad exercise 6 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 6` and `ninjagrad explain layernorm` first.
#
# ln = ln_w * (x - mean) * rstd + ln_b over the channels, biased variance (1/C). With dxhat = dln * ln_w:
# dx = rstd * (dxhat - mean_C(dxhat) - xhat * mean_C(dxhat * xhat))   (llm.c's layernorm_backward)
# The middle term is the path through the mean; the last the path through the variance.
dx = rstd * (dln*ln_w - (dln*ln_w).mean(-1, keepdim=True) - xhat * (dln*ln_w*xhat).mean(-1, keepdim=True))

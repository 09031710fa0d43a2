# ninjagrad exercise 9 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 9` and `ninjagrad hint NAME` first.
#
# hpre reaches h twice: as the factor in 0.5 * hpre * (1 + t), and through hpre3 and inner inside t.
dh = dlogits @ W2.T  # (n, H)  logits = h @ W2
dW2 = h.T @ dlogits  # (H, V)
dt = 0.5 * hpre * dh  # (n, H)  h = 0.5 * hpre * (1 + t)
dinner = (1 - t**2) * dt  # (n, H)  t = tanh(inner)
dhpre3 = (2 / torch.pi)**0.5 * 0.044715 * dinner  # (n, H)  inner = k * (hpre + 0.044715 * hpre3)
dhpre = 0.5 * (1 + t) * dh  # (n, H)  the factor branch of h ...
dhpre += (2 / torch.pi)**0.5 * dinner  # ... the branch through inner's linear term ...
dhpre += 3 * hpre**2 * dhpre3  # ... and through the cube
dW1 = x.T @ dhpre  # (D, H)
db1 = dhpre.sum(0)  # (H,)  b1 was broadcast over the batch

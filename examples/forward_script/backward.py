# The backward of examples/forward_script/forward.py, one gradient per forward node.
#   ninjagrad check backward.py --forward forward.py
dlogits = (F.softmax(logits, 1) - F.one_hot(Y, V)) / n  # cross-entropy: (softmax - one_hot) / n
dh = dlogits @ W2.T  # (n, H)
dW2 = h.T @ dlogits  # (H, V)
dsig = hpre * dh  # h = hpre * sig: the product rule, one factor each
dhpre = sig * dh  # the direct branch of h ...
dhpre += sig * (1 - sig) * dsig  # ... plus the branch through the sigmoid: sig' = sig (1 - sig)
dW1 = x.T @ dhpre  # (D, H)
db1 = dhpre.sum(0)  # (H,) b1 was broadcast over the batch

# ninjagrad exercise 4 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 4` first.
#
# Train with it:   ninjagrad train --backward THIS_FILE --steps 2000
import torch
import torch.nn.functional as F


def backward(n, Xb, Yb, C, W1, W2, bngain, emb, embcat, bnraw, bnvar_inv, h, logits):
    """The lecture's manual backward, with the fused cross-entropy and batchnorm of exercises 2 and 3.

    Parameters are looked up by name among the forward's values. Returns the parameter gradients.
    """
    # cross-entropy: softmax minus one-hot, over n
    dlogits = F.softmax(logits, 1)  # (B, V)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
    # second linear layer
    dh = dlogits @ W2.T  # (B, H)
    dW2 = h.T @ dlogits  # (H, V)
    db2 = dlogits.sum(0)  # (V,)
    # tanh
    dhpreact = (1.0 - h**2) * dh  # (B, H)
    # batchnorm, fused (Bessel's n-1 in the variance)
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)  # (1, H)
    dbnbias = dhpreact.sum(0, keepdim=True)  # (1, H)
    dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
    # first linear layer
    dembcat = dhprebn @ W1.T  # (B, T*E)
    dW1 = embcat.T @ dhprebn  # (T*E, H)
    db1 = dhprebn.sum(0)  # (H,)
    # embedding: index_add_ accumulates repeated characters
    demb = dembcat.view(emb.shape)  # (B, T, E)
    dC = torch.zeros_like(C)  # (V, E)
    dC.index_add_(0, Xb.view(-1), demb.view(-1, C.shape[1]))
    return {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, "bnbias": dbnbias}

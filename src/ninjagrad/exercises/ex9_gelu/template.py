# ninjagrad exercise 9: GELU (tanh approximation), step by step
#
# Replace each `...` with the gradient of the loss with respect to that variable. dlogits is given.
# In scope: the forward's tensors (see `ninjagrad explain forward --exercise 9`), the parameters W1,
# b1, W2, the data x and Y, the sizes n, D, H, V, and torch, F. d<name> must have <name>'s shape.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint NAME --exercise 9

dh = ...       # logits = h @ W2
dW2 = ...
dt = ...       # h = 0.5 * hpre * (1 + t)
dinner = ...   # t = torch.tanh(inner)
dhpre3 = ...   # inner = (2 / torch.pi)**0.5 * (hpre + 0.044715 * hpre3)
dhpre = ...    # hpre is used three times: in h, in inner, in hpre3 (dhpre += ...)
dW1 = ...      # hpre = x @ W1 + b1
db1 = ...

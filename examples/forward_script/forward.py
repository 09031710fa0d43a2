"""A forward script of your own: a two-layer net with a SiLU, checked by `ninjagrad check --forward`.

    ninjagrad exercise --forward forward.py -o my_backward.py     # a template: one d<name> per node
    ninjagrad check my_backward.py --forward forward.py           # judge it against autograd
"""
# -- setup: the inputs, each tensor marked param(...) (gets a gradient) or data(...) (does not) --
n, D, H, V = 16, 6, 12, 5  # batch, input features, hidden units, classes
x = data(torch.randn(n, D))
W1 = param(torch.randn(D, H) / D**0.5)
b1 = param(torch.randn(H) * 0.1)
W2 = param(torch.randn(H, V) / H**0.5)
Y = data(torch.randint(0, V, (n,)))
# -- forward: one `name = expression` per line, ending with a scalar loss --
hpre = x @ W1 + b1  # (n, H)
sig = torch.sigmoid(hpre)  # (n, H)
h = hpre * sig  # (n, H) SiLU: x * sigmoid(x)
logits = h @ W2  # (n, V)
loss = F.cross_entropy(logits, Y)  # ()

"""GELU as GPT-2 computes it (the tanh approximation), chunked into steps, in a two-layer net.

    gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

Every name after the setup gets a gradient d<name> (dlogits is given). n batch, D inputs,
H hidden units, V classes.
"""
# -- setup: the inputs, each marked param(...) (gets a gradient) or data(...) (does not) --
n, D, H, V = 16, 8, 24, 7
x = data(torch.randn(n, D))  # (n, D) inputs: data, no gradient asked
W1 = param(torch.randn(D, H) / D**0.5)  # (D, H)
b1 = param(0.1 * torch.randn(H))  # (H,)
W2 = param(torch.randn(H, V) / H**0.5)  # (H, V)
Y = data(torch.randint(0, V, (n,)))  # (n,) targets
# -- forward --
hpre = x @ W1 + b1  # (n, H)
hpre3 = hpre**3  # (n, H)
inner = (2 / torch.pi)**0.5 * (hpre + 0.044715 * hpre3)  # (n, H)
t = torch.tanh(inner)  # (n, H)
h = 0.5 * hpre * (1 + t)  # (n, H) gelu(hpre)
logits = h @ W2  # (n, V)
loss = F.cross_entropy(logits, Y)  # ()

"""One head of causal self-attention ("Let's build GPT"'s Head), chunked into steps, with a head and a loss.

Every name after the setup gets a gradient d<name> (dlogits is given). B batch, T positions,
C channels of x, hs head size, V classes of the head.
"""
# -- setup: the inputs, each marked param(...) (gets a gradient) or data(...) (does not) --
B, T, C, hs, V = 4, 8, 16, 8, 11
x = param(torch.randn(B, T, C))  # (B, T, C) the (normalised) residual stream
Wq = param(torch.randn(C, hs) / C**0.5)  # (C, hs) query, key and value projections, no bias
Wk = param(torch.randn(C, hs) / C**0.5)
Wv = param(torch.randn(C, hs) / C**0.5)
Wo = param(torch.randn(hs, V) / hs**0.5)  # (hs, V) a head, so that dout is not uniform
Y = data(torch.randint(0, V, (B, T)))  # (B, T) targets
tril = data(torch.tril(torch.ones(T, T)))  # (T, T) 1 where position t may look at position s <= t
# -- forward --
q = x @ Wq  # (B, T, hs) what each position is looking for
k = x @ Wk  # (B, T, hs) what each position offers
v = x @ Wv  # (B, T, hs) what each position passes on
wei = q @ k.transpose(-2, -1) * hs**-0.5  # (B, T, T) affinities, scaled to keep the softmax soft
wei_masked = wei.masked_fill(tril == 0, float("-inf"))  # (B, T, T) no looking at the future
att = F.softmax(wei_masked, dim=-1)  # (B, T, T) each row sums to 1, zero above the diagonal
out = att @ v  # (B, T, hs) a weighted average of the values
logits = out @ Wo  # (B, T, V)
loss = F.cross_entropy(logits.view(-1, V), Y.view(-1))  # ()

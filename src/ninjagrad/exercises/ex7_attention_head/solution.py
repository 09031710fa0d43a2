# ninjagrad exercise 7 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 7` and `ninjagrad hint NAME` first.
#
# Batched matmuls work as 2-D ones per batch element: for y = a @ b, da = dy @ b^T and db = a^T @ dy,
# with the last two dims transposed. A weight shared by every batch element sums their gradients.
dout = dlogits @ Wo.T  # (B, T, hs)  logits = out @ Wo
dWo = out.view(-1, hs).T @ dlogits.view(-1, V)  # (hs, V)
datt = dout @ v.transpose(-2, -1)  # (B, T, T)  out = att @ v
dv = att.transpose(-2, -1) @ dout  # (B, T, hs)
# softmax, row by row: dwei_i = att_i * (datt_i - sum_j datt_j att_j)
dwei_masked = att * (datt - (datt * att).sum(-1, keepdim=True))  # (B, T, T)
# masked entries were replaced by a constant: no gradient passes to wei there (att is 0 there anyway)
dwei = dwei_masked.masked_fill(tril == 0, 0.0)  # (B, T, T)
dq = (dwei * hs**-0.5) @ k  # (B, T, hs)  wei = q @ k^T * hs**-0.5
dk = (dwei * hs**-0.5).transpose(-2, -1) @ q  # (B, T, hs)
dWq = x.view(-1, C).T @ dq.view(-1, hs)  # (C, hs)  q = x @ Wq, summed over every position
dWk = x.view(-1, C).T @ dk.view(-1, hs)
dWv = x.view(-1, C).T @ dv.view(-1, hs)
dx = dq @ Wq.T  # (B, T, C)  x feeds q, k and v: three branches
dx += dk @ Wk.T
dx += dv @ Wv.T

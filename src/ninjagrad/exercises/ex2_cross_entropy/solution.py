# ninjagrad exercise 2 -- reference solution
# SPOILER: this is the package's own solution. Try `ninjagrad exercise 2` and `ninjagrad explain cross_entropy` first.
#
# loss = F.cross_entropy(logits, Yb) = -1/n sum_b log softmax(logits_b)[Yb[b]]
# dloss/dlogits[b, j] = (softmax(logits_b)[j] - 1{j == Yb[b]}) / n: softmax minus one-hot, over n
dlogits = F.softmax(logits, 1)  # (B, V)
dlogits[range(n), Yb] -= 1
dlogits /= n

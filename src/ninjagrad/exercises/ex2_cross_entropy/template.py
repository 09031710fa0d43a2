# ninjagrad exercise 2: cross-entropy backward in one expression
#
# The forward's cross-entropy is   loss = F.cross_entropy(logits, Yb)   (exercise 1's steps, fused).
# Write dlogits (shape (n, vocab_size)) from logits, Yb and n, without going through probs,
# counts, ... one by one (exercise 1's forward values and the gradients above dlogits are in scope,
# as in the lecture's notebook). Derive it on paper first: `ninjagrad explain cross_entropy`.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint logits --exercise 2

dlogits = ...

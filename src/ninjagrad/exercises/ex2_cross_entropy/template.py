# ninjagrad exercise 2: cross-entropy backward in one expression
#
# The forward ends with   loss = F.cross_entropy(logits, Yb)
# Write dlogits (shape (n, vocab_size)) from logits, Yb and n, without going through probs,
# counts, ... one by one. Derive it on paper first: `ninjagrad explain cross_entropy`.
#
# Check with:   ninjagrad check THIS_FILE        Stuck?  ninjagrad hint logits --exercise 2

dlogits = ...

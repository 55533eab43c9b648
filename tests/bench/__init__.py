"""``make bench``: Chimeway against a hand-written baseline, side by side on private servers."""

#: Where the baseline's messages live (its own Redis namespace and queue) and its actor's name.
BASELINE_NAMESPACE = "baseline"
BASELINE_QUEUE = "baseline"
BASELINE_ACTOR = "baseline_deliver"

"""The status backend: hookkit's live view of the workers (stacks on demand)."""

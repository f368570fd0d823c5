"""CodeTask operator: runs a CodeTask as one Kubernetes Job per attempt."""

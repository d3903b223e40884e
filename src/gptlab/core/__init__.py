"""What every part shares: errors, atomic file writes, the entry-point wrapper, config resolvers, secrets."""

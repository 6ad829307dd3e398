"""Networks and data of one's own, as a researcher brings them to nin (docs/your_network.md)."""

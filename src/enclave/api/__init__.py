"""HTTP layer: protocol parsing, validation and error shapes. No model logic lives here."""

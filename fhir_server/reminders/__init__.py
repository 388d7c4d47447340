"""Patient reminders: e-mail and text messages that only say "sign in" (README.md)."""

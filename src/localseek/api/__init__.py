"""The HTTP surface both apps share: OpenAI-shaped errors, body limits, the /load schema."""

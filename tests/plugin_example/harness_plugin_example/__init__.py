"""Extensions of the harness, each one module registered through an entry point (see pyproject.toml)."""

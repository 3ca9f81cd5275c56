"""Read-only views of a project and its store for people: report, explain, models, history."""

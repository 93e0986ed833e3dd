"""The book-facing layer: the command line, papermill reruns, data recipes and chapter set-up."""

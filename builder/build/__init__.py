"""The build pipeline: recipe, context, families, bootstrap methods, steps, targets."""

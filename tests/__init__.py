"""The test suite (a package, so that test files import their shared helpers as ``tests.helpers``)."""

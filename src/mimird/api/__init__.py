"""The route table: which URL goes to which component's handler."""

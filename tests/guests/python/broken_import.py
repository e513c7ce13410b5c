"""A handler module whose import fails: the function's init error."""
import not_a_module_anywhere  # noqa: F401


def lambda_handler(event, context):
    return event

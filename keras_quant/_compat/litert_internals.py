"""Private parts of LiteRT's Python interpreter that keras-quant reads."""


def ops_details(interpreter):
    """Every op of an allocated interpreter: `op_name`, `inputs`,
    `outputs` (tensor indices); LiteRT has no public op listing."""
    return interpreter._get_ops_details()

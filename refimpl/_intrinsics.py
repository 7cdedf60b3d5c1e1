"""Numba intrinsics for the hot kernels: small arrays on the stack, functions
from their addresses.

``stack_array(n)`` and ``stack_index_array(n)`` give a float64 / int64 array
of literal length ``n`` in the calling function's frame: no allocation, no
reference counting, and LLVM knows that nothing else points into it, so
loops that store into such arrays while reading others vectorize. Valid
until the calling function returns: never return one or keep it.

``function_at(signature)`` gives an intrinsic that makes a first-class
function of that signature from the int64 address of a compiled function's
C wrapper (how ``_kernels`` passes psi's functions on the general path).
"""

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _stack_array_intrinsic(dtype):
    """An intrinsic ``f(size)`` returning a ``dtype`` array of literal ``size``
    on the calling function's stack."""
    array_type = types.Array(dtype, 1, "C")

    def stack_array(typingctx, size):
        if not isinstance(size, types.IntegerLiteral):
            return None
        n = size.literal_value

        def codegen(context, builder, signature, args):
            element = context.get_value_type(dtype)
            data = cgutils.alloca_once(builder, element, size=n)
            array = context.make_array(array_type)(context, builder)
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
            context.populate_array(array, data=data,
                                   shape=[context.get_constant(types.intp, n)],
                                   strides=[itemsize], itemsize=itemsize, meminfo=None)
            return array._getvalue()

        return array_type(size), codegen

    stack_array.__name__ = f"stack_array_{dtype}"
    return intrinsic(stack_array)


stack_array = _stack_array_intrinsic(types.float64)
stack_index_array = _stack_array_intrinsic(types.int64)


def function_at(signature):
    """An intrinsic: ``types.FunctionType(signature)`` from the address of a
    compiled function's C wrapper (an int64)."""
    function_type = types.FunctionType(signature)

    @intrinsic
    def at_address(typingctx, address):
        if not isinstance(address, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            function = cgutils.create_struct_proxy(function_type)(context, builder)
            voidptr = context.get_value_type(types.voidptr)
            function.c_addr = builder.inttoptr(args[0], voidptr)
            function.py_addr = cgutils.get_null_value(voidptr)
            function.jit_addr = cgutils.get_null_value(voidptr)
            return function._getvalue()

        return function_type(address), codegen

    return at_address

"""Numba intrinsics for the hot kernels: small arrays on the stack, functions
from their addresses.

``stack_array(n)`` and ``stack_index_array(n)`` give a float64 / int64 array
of literal length ``n`` in the calling function's frame: no allocation, no
reference counting, and LLVM knows that nothing else points into it, so
loops that store into such arrays while reading others vectorize. Valid
until the calling function returns: never return one or keep it.

``borrowed(x)`` is ``x`` (an array, or a tuple of arrays and other values)
without a reference to the arrays' memory, and ``row(a, i)`` is ``a[i]`` of a
C-contiguous array without one: no reference counting (every function that
receives an ordinary array increments and decrements its count, atomically),
so valid only while the caller holds the arrays themselves. The safe pattern:
a function borrows what it received as arguments (its caller holds those
until it returns), never what it allocated itself (Numba frees a local array
after its last use, which a borrowed view does not extend).

``function_at(signature)`` gives an intrinsic that makes a first-class
function of that signature from the int64 address of a compiled function's
C wrapper (how ``_kernels`` passes psi's functions on the general path), or
with ``native=True`` of its machine code in Numba's calling convention (how
the window path's entry kernels reach the window kernels).
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


def _borrow(context, builder, typ, value):
    """``value`` of type ``typ`` with every array's meminfo null; any other
    member is a new reference, as an intrinsic's result must be."""
    if isinstance(typ, types.Array):
        array = context.make_array(typ)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        return array._getvalue()
    if isinstance(typ, types.BaseTuple):
        for k, member in enumerate(typ):
            item = _borrow(context, builder, member, builder.extract_value(value, k))
            value = builder.insert_value(value, item, k)
        return value
    context.nrt.incref(builder, typ, value)
    return value


@intrinsic
def borrowed(typingctx, x):
    """``x`` with its arrays borrowed (meminfo null); same type."""

    def codegen(context, builder, signature, args):
        return _borrow(context, builder, x, args[0])

    return x(x), codegen


@intrinsic
def row(typingctx, a, i):
    """``a[i]`` of a C-contiguous array, borrowed (``meminfo`` null)."""
    if not (isinstance(a, types.Array) and a.layout == "C" and a.ndim >= 2
            and isinstance(i, types.Integer)):
        return None
    row_type = a.copy(ndim=a.ndim - 1, layout="C")

    def codegen(context, builder, signature, args):
        array = context.make_array(a)(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        shape = cgutils.unpack_tuple(builder, array.shape)
        strides = cgutils.unpack_tuple(builder, array.strides)
        data = cgutils.pointer_add(builder, array.data, builder.mul(index, strides[0]))
        view = context.make_array(row_type)(context, builder)
        context.populate_array(view, data=builder.bitcast(data, array.data.type),
                               shape=shape[1:], strides=strides[1:], itemsize=array.itemsize,
                               meminfo=None)
        return view._getvalue()

    return row_type(a, i), codegen


def function_at(signature, native=False):
    """An intrinsic: ``types.FunctionType(signature)`` from the address of a
    compiled function's C wrapper (an int64), or with ``native`` of the
    compiled function itself (Numba's own calling convention: no wrapper in
    between)."""
    function_type = types.FunctionType(signature)

    @intrinsic
    def at_address(typingctx, address):
        if not isinstance(address, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            function = cgutils.create_struct_proxy(function_type)(context, builder)
            voidptr = context.get_value_type(types.voidptr)
            pointer = builder.inttoptr(args[0], voidptr)
            null = cgutils.get_null_value(voidptr)
            function.c_addr = null if native else pointer
            function.py_addr = null
            function.jit_addr = pointer if native else null
            return function._getvalue()

        return function_type(address), codegen

    return at_address

"""Numba intrinsics for the hot kernels: small arrays on the stack, functions
from their addresses; and ``call_kernel``, how Python runs a kernel.

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

``call_kernel(name, kernel, args)`` runs a kernel from Python and raises an
exception that compiled code behind a C wrapper could only report
(``_KernelErrors``); every entry kernel (``_kernels.compile_on_first_call``)
and ``Psi.values`` run this way.
"""

import sys
import threading

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


class _KernelErrors:
    """Exceptions raised in compiled code that a kernel reached through a C
    wrapper (psi's own functions, a batch's rows run in threads): the wrapper
    cannot pass them on. It reports each to ``sys.unraisablehook``
    ("Exception ignored in ...") and returns an undefined value, and the
    kernel goes on with it. ``call_kernel`` runs a kernel with ``_report``
    in front of the hook that was there, and puts that hook back afterwards;
    the reports of compiled code made while the kernel runs are kept and the
    first is raised when it returns, so no result computed with an undefined
    value is returned. Any other report goes to the previous hook.

    Kernel calls run one at a time (a lock; the kernels use every core
    anyway): the reports carry no caller, so with two calls at once one could
    not tell whose they are. A report of compiled code from some other thread
    while a kernel runs is raised by that call too (loud, not lost). A hook
    of the user's that itself calls a refimpl kernel, for a report made in a
    Numba worker thread while a kernel runs, would wait for the lock forever."""

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0  # kernel calls running (nested only from a hook)
        self._caught = []
        self._previous = sys.__unraisablehook__
        self._hook = self._report  # bound once: sys.unraisablehook is compared with it
        self._reporting = threading.local()

    def _report(self, unraisable):
        if getattr(self._reporting, "active", False):
            # passed back to it (a hook that forwards to whatever it replaced)
            sys.__unraisablehook__(unraisable)
            return
        self._reporting.active = True
        try:
            if self._depth and isinstance(unraisable.object, str) \
                    and unraisable.object.startswith("<numba."):
                error = unraisable.exc_value
                if error is None:
                    error = RuntimeError(f"{unraisable.exc_type.__name__} in compiled code")
                self._caught.append(error)
            else:
                self._previous(unraisable)
        finally:
            self._reporting.active = False

    def call(self, name, kernel, args):
        with self._lock:
            depth = self._depth
            start = len(self._caught)
            previous = sys.unraisablehook
            try:
                self._depth = depth + 1
                if previous is not self._hook:
                    self._previous = previous
                    sys.unraisablehook = self._hook
                result = kernel(*args)
            finally:
                # restored from what was read before, also after an interrupt
                self._depth = depth
                if previous is not self._hook:
                    sys.unraisablehook = previous
                caught = self._caught[start:]
                del self._caught[start:]
        if caught:
            error = caught[0]
            error.add_note(f"raised in compiled code called by the kernel {name}; refimpl "
                           f"discarded the results of the call ({len(caught)} such reports)")
            raise error
        return result


_KERNEL_ERRORS = _KernelErrors()


def call_kernel(name, kernel, args):
    """``kernel(*args)``, raising an exception that compiled code reached
    through a C wrapper could only report (``_KernelErrors``); ``name`` names
    the kernel in the error's note."""
    return _KERNEL_ERRORS.call(name, kernel, args)

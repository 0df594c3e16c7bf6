/*
 * readwaiter.c -- the future a waiting read's task waits on, made for it.
 *
 * Why: a level 1-3 read that has to wait yields a future to its task, and
 * the receive completion sets it.  With asyncio's own Future that cost about
 * 2,600 instructions a message (callgrind, level 1 echo): Future(loop=...)
 * with its keyword dict and get_debug() call, set_result scheduling the
 * task's wake-up through call_soon, and the future's teardown.  What the wait
 * needs is much less: one callback (the task's wake-up), a done flag, cancel.
 *
 * What: ReadWaiter, a future-compatible object, as asyncio.Task accepts any
 * (the protocol of asyncio.isfuture and Task.__step): _asyncio_future_blocking,
 * get_loop, add_done_callback, remove_done_callback, cancel, cancelled, done,
 * result, exception, set_result and __await__.  It never holds an exception
 * other than its cancellation: a read learns of errors from the connection,
 * not from its waiter.  Without the extension, InputPipe.arm_waiter makes an
 * asyncio Future: the reference.
 *
 * How: the first callback and its context are two fields (a task adds one),
 * any further ones a list.  When the receive path finishes a waiter
 * (waiter_finish with in_place), its first callback goes to wake_task
 * (wake.c), which runs a task's wake-up right there when it may and queues it
 * otherwise; set_result from Python and cancel() queue every callback with
 * loop.call_soon, as a Future does.  A ConnTask (conntask.c) does not add a
 * callback: its step parks the task itself in the first field (waiter_park,
 * cb_task set), and finishing calls wake_conntask; remove_done_callback sees
 * the task's bound _wakeup there, as if it had been added.  Finished waiters
 * are kept on a short freelist, as ReadCoroutine objects are.
 *
 * Rules: as speedups.c.  A finishing waiter takes its callbacks out before
 * any runs (a callback may look at the waiter, or drop the last reference to
 * it: the caller holds one throughout).
 */
#include "speedups.h"

#include <string.h>

enum { W_PENDING, W_DONE, W_CANCELLED };

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    PyObject *cb, *ctx;         /* the first done callback and its context, or NULL */
    PyObject *more;             /* list of (callback, context) after the first, or NULL */
    PyObject *result;           /* W_DONE: the result */
    PyObject *cancel_msg;       /* W_CANCELLED: the message, or NULL */
    int state;
    int blocking;               /* _asyncio_future_blocking */
    int cb_task;                /* cb is a ConnTask parked here (waiter_park), not a callable */
} WaiterObject;

static PyTypeObject WaiterType;
static PyObject *cancelled_error, *invalid_state_error;
static PyObject *s_context, *s_msg, *s_blocking, *s_result, *s_get_loop;
/* result() of a finished waiter: a function of no arguments returning None
 * (see w_getattro). */
static PyObject *none_fn;

int
waiter_check(PyObject *o)
{
    return Py_IS_TYPE(o, &WaiterType);
}

/* ------------------------------------------------------------ finishing */

/* The callbacks, taken out and run (the first in place when in_place and
 * wake_task allows it) or queued, in the order they were added.  The first
 * error stops the rest (they are dropped, as a Future's would be by a
 * call_soon that raised). */
static int
schedule(WaiterObject *self, int in_place)
{
    PyObject *cb = self->cb, *ctx = self->ctx, *more = self->more;
    int cb_task = self->cb_task;
    self->cb = self->ctx = self->more = NULL;
    self->cb_task = 0;
    if (self->loop == NULL) {       /* cleared by the cycle collector: nothing to run on */
        Py_XDECREF(cb);
        Py_XDECREF(ctx);
        Py_XDECREF(more);
        return 0;
    }
    PyObject *loop = Py_NewRef(self->loop);
    Py_INCREF(self);
    int rc = 0;
    if (cb != NULL) {
        if (cb_task)
            rc = wake_conntask(loop, cb, (PyObject *)self, ctx, in_place);
        else
            rc = in_place ? wake_task(loop, cb, (PyObject *)self, ctx)
                          : wake_queue(loop, cb, (PyObject *)self, ctx);
        Py_DECREF(cb);
        Py_DECREF(ctx);
    }
    if (more != NULL) {
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(more); i++) {
            PyObject *pair = PyList_GET_ITEM(more, i);
            rc = wake_queue(loop, PyTuple_GET_ITEM(pair, 0), (PyObject *)self,
                            PyTuple_GET_ITEM(pair, 1));
        }
        Py_DECREF(more);
    }
    Py_DECREF(loop);
    Py_DECREF(self);
    return rc;
}

int
waiter_finish(PyObject *op, int in_place)
{
    WaiterObject *self = (WaiterObject *)op;
    if (self->state != W_PENDING)
        return 0;
    self->state = W_DONE;
    self->result = Py_NewRef(Py_None);
    return schedule(self, in_place);
}

int
waiter_park(PyObject *op, PyObject *task, PyObject *ctx, PyObject *loop)
{
    WaiterObject *self = (WaiterObject *)op;
    if (self->state != W_PENDING || !self->blocking || self->loop != loop || self->cb != NULL
            || self->more != NULL || ctx == NULL || !PyContext_CheckExact(ctx))
        return 0;
    self->blocking = 0;
    self->cb = Py_NewRef(task);
    self->ctx = Py_NewRef(ctx);
    self->cb_task = 1;
    return 1;
}

int
waiter_done_ok(PyObject *op)
{
    return waiter_check(op) && ((WaiterObject *)op)->state == W_DONE;
}

/* A parked task as the callback Python code would see: its bound _wakeup
 * (before remove_done_callback compares callbacks).  0, or -1. */
static int
unpark(WaiterObject *self)
{
    if (!self->cb_task)
        return 0;
    PyObject *cb = conntask_bound_wakeup(self->cb);
    if (cb == NULL)
        return -1;
    Py_SETREF(self->cb, cb);
    self->cb_task = 0;
    return 0;
}

void
waiter_block(PyObject *op)
{
    ((WaiterObject *)op)->blocking = 1;
}

static PyObject *
cancelled_exc(WaiterObject *self)
{
    if (self->cancel_msg == NULL)
        return PyObject_CallNoArgs(cancelled_error);
    return PyObject_CallOneArg(cancelled_error, self->cancel_msg);
}

PyObject *
waiter_result(PyObject *op)
{
    WaiterObject *self = (WaiterObject *)op;
    if (self->state == W_DONE)
        return Py_NewRef(self->result);
    if (self->state == W_PENDING) {
        PyErr_SetString(invalid_state_error, "Result is not ready.");
        return NULL;
    }
    PyObject *exc = cancelled_exc(self);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------- Python methods */

static PyObject *
w_result(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return waiter_result(self);
}

static PyObject *
w_exception(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state == W_DONE)
        Py_RETURN_NONE;
    return waiter_result((PyObject *)self);     /* raises what is wrong */
}

static PyObject *
w_done(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state != W_PENDING);
}

static PyObject *
w_cancelled(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state == W_CANCELLED);
}

static PyObject *
w_get_loop(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the ReadWaiter was cleared");
        return NULL;
    }
    return Py_NewRef(self->loop);
}

/* set_result(result): from Python (InputPipe.wake, end); its callbacks are
 * queued, never run in place. */
static PyObject *
w_set_result(WaiterObject *self, PyObject *result)
{
    if (self->state != W_PENDING) {
        PyErr_SetString(invalid_state_error, "invalid state");
        return NULL;
    }
    self->state = W_DONE;
    self->result = Py_NewRef(result);
    if (schedule(self, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* One keyword argument named name (interned as iname) at most: its value in
 * *out (borrowed); 0, or -1 with a TypeError naming the method. */
static int
one_keyword(PyObject *kwnames, PyObject *const *kwvalues, PyObject *iname, const char *method,
            PyObject **out)
{
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)
        return 0;
    PyObject *k = PyTuple_GET_ITEM(kwnames, 0);
    if (PyTuple_GET_SIZE(kwnames) == 1
            && (k == iname || PyUnicode_Compare(k, iname) == 0)) {
        *out = kwvalues[0];
        return 0;
    }
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", method,
                     PyTuple_GET_ITEM(kwnames, PyTuple_GET_SIZE(kwnames) == 1 ? 0 : 1));
    return -1;
}

/* add_done_callback(fn, *, context=None) */
static PyObject *
w_add_done_callback(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    PyObject *ctx = Py_None;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "add_done_callback() takes 1 positional argument (%zd given)",
                     nargs);
        return NULL;
    }
    if (one_keyword(kwnames, args + nargs, s_context, "add_done_callback", &ctx) < 0)
        return NULL;
    if (self->state != W_PENDING) {
        if (self->loop != NULL && wake_queue(self->loop, args[0], (PyObject *)self, ctx) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    ctx = ctx == Py_None ? PyContext_CopyCurrent() : Py_NewRef(ctx);
    if (ctx == NULL)
        return NULL;
    if (self->cb == NULL) {
        self->cb = Py_NewRef(args[0]);
        self->ctx = ctx;
        Py_RETURN_NONE;
    }
    PyObject *pair = PyTuple_Pack(2, args[0], ctx);
    Py_DECREF(ctx);
    if (pair == NULL)
        return NULL;
    if (self->more == NULL && (self->more = PyList_New(0)) == NULL) {
        Py_DECREF(pair);
        return NULL;
    }
    int rc = PyList_Append(self->more, pair);
    Py_DECREF(pair);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* remove_done_callback(fn): how many were removed (compared with ==). */
static PyObject *
w_remove_done_callback(WaiterObject *self, PyObject *fn)
{
    Py_ssize_t removed = 0;
    if (unpark(self) < 0)
        return NULL;
    if (self->cb != NULL) {
        int eq = PyObject_RichCompareBool(self->cb, fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq && self->cb != NULL) {
            Py_CLEAR(self->cb);
            Py_CLEAR(self->ctx);
            removed++;
        }
    }
    PyObject *more = self->more;
    if (more != NULL) {
        Py_INCREF(more);
        PyObject *keep = PyList_New(0);
        if (keep == NULL) {
            Py_DECREF(more);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(more); i++) {
            PyObject *pair = PyList_GET_ITEM(more, i);
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), fn, Py_EQ);
            if (eq < 0 || (!eq && PyList_Append(keep, pair) < 0)) {
                Py_DECREF(keep);
                Py_DECREF(more);
                return NULL;
            }
            removed += eq;
        }
        Py_DECREF(more);
        /* The survivors, the first of them in front when the front went. */
        if (self->cb == NULL && PyList_GET_SIZE(keep) > 0) {
            PyObject *pair = PyList_GET_ITEM(keep, 0);
            self->cb = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
            self->ctx = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
            if (PyList_SetSlice(keep, 0, 1, NULL) < 0) {
                Py_DECREF(keep);
                return NULL;
            }
        }
        if (PyList_GET_SIZE(keep) == 0)
            Py_CLEAR(keep);
        Py_XSETREF(self->more, keep);
    }
    return PyLong_FromSsize_t(removed);
}

/* cancel(msg=None): True when it was pending (its callbacks are queued). */
static PyObject *
w_cancel(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *msg = nargs > 0 ? args[0] : Py_None;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "cancel() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0 && nargs == 1) {
        PyErr_SetString(PyExc_TypeError, "cancel() got multiple values for argument 'msg'");
        return NULL;
    }
    if (one_keyword(kwnames, args + nargs, s_msg, "cancel", &msg) < 0)
        return NULL;
    if (self->state != W_PENDING)
        Py_RETURN_FALSE;
    self->state = W_CANCELLED;
    self->cancel_msg = msg == Py_None ? NULL : Py_NewRef(msg);
    if (schedule(self, 0) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
w_get_blocking(WaiterObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->blocking);
}

static int
w_set_blocking(WaiterObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    int b = PyObject_IsTrue(value);
    if (b < 0)
        return -1;
    self->blocking = b;
    return 0;
}

/* iter(waiter), as Future.__await__: yields itself while pending, then
 * returns the result (or raises the cancellation). */
static PyObject *
w_iternext(WaiterObject *self)
{
    if (self->state == W_PENDING) {
        self->blocking = 1;
        return Py_NewRef(self);
    }
    PyObject *r = waiter_result((PyObject *)self);
    if (r == NULL)
        return NULL;
    if (r != Py_None) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    Py_DECREF(r);
    return NULL;
}

static PyObject *
w_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* The attributes a task reads, without the generic lookup.  asyncio.Task
 * (C, CPython 3.11) reads _asyncio_future_blocking, get_loop and
 * add_done_callback by interned name and, when woken, calls result() by a
 * name made anew each time -- through tp_getattr, by its C string, when
 * the type has one; without, a string is made, the type's attribute cache
 * misses every time (about 1,500 instructions per wake-up, callgrind) and a
 * bound method is made.  Here _asyncio_future_blocking is read and written
 * in place; get_loop is a function shared by the waiters of one loop (bound
 * to a weak reference to it); and a finished waiter's result is a shared
 * function returning None -- what the bound method would return, forever: a
 * finished waiter never changes. */
static int
is_name(PyObject *name, PyObject *interned, const char *s, Py_ssize_t n)
{
    if (name == interned)
        return 1;
    return PyUnicode_CheckExact(name) && PyUnicode_GET_LENGTH(name) == n
           && PyUnicode_KIND(name) == PyUnicode_1BYTE_KIND
           && memcmp(PyUnicode_DATA(name), s, (size_t)n) == 0;
}

/* get_loop without a bound method per wait: the function the waiter
 * gives is bound to a weak reference to the loop and returns what it points
 * to, kept for the last loop asked about (a reactor thread has one). */
static PyObject *last_loop_ref, *last_get_loop;

/* What ref points to (a new reference), or NULL: without an error when it
 * died, with one on failure. */
static PyObject *
ref_target(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *o;
    return PyWeakref_GetRef(ref, &o) < 0 ? NULL : o;
#else
    PyObject *o = PyWeakref_GetObject(ref);         /* borrowed */
    return o == NULL || o == Py_None ? NULL : Py_NewRef(o);
#endif
}

static PyObject *
deref_loop(PyObject *ref, PyObject *Py_UNUSED(ignored))
{
    PyObject *loop = ref_target(ref);
    if (loop == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "the ReadWaiter's loop is gone");
    return loop;
}

static PyMethodDef get_loop_def = {
    "get_loop", deref_loop, METH_NOARGS, "The loop the read's task runs on."};

static PyObject *
get_loop_fn(WaiterObject *self)
{
    if (last_loop_ref != NULL) {
        PyObject *loop = ref_target(last_loop_ref);
        Py_XDECREF(loop);       /* compared by identity only */
        if (loop == self->loop)
            return Py_NewRef(last_get_loop);
        if (loop == NULL && PyErr_Occurred())
            return NULL;
    }
    PyObject *ref = PyWeakref_NewRef(self->loop, NULL);
    if (ref == NULL) {          /* a loop without weak references: the method */
        PyErr_Clear();
        return NULL;
    }
    PyObject *fn = PyCFunction_New(&get_loop_def, ref);
    if (fn == NULL) {
        Py_DECREF(ref);
        return NULL;
    }
    Py_XSETREF(last_loop_ref, ref);
    Py_XSETREF(last_get_loop, Py_NewRef(fn));
    return fn;
}

static PyObject *
w_getattro(WaiterObject *self, PyObject *name)
{
    if (name == s_blocking)
        return PyBool_FromLong(self->blocking);
    if (name == s_get_loop && self->loop != NULL) {
        PyObject *fn = get_loop_fn(self);
        if (fn != NULL || PyErr_Occurred())
            return fn;
    }
    if (self->state == W_DONE && self->result == Py_None && is_name(name, s_result, "result", 6))
        return Py_NewRef(none_fn);
    return PyObject_GenericGetAttr((PyObject *)self, name);
}

/* The same by a C string: CPython's PyObject_CallMethod(o, "result", NULL),
 * which the task's wake-up uses, asks tp_getattr before making a string. */
static PyObject *
w_getattr(WaiterObject *self, char *name)
{
    if (self->state == W_DONE && self->result == Py_None && strcmp(name, "result") == 0)
        return Py_NewRef(none_fn);
    PyObject *s = PyUnicode_FromString(name);
    if (s == NULL)
        return NULL;
    PyObject *r = w_getattro(self, s);
    Py_DECREF(s);
    return r;
}

static int
w_setattro(WaiterObject *self, PyObject *name, PyObject *value)
{
    if (name == s_blocking)
        return w_set_blocking(self, value, NULL);
    return PyObject_GenericSetAttr((PyObject *)self, name, value);
}

static PyObject *
returns_none(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE;
}

static PyMethodDef none_def = {
    "result", returns_none, METH_NOARGS, "The result of a finished ReadWaiter: None."};

static PyObject *
w_repr(WaiterObject *self)
{
    if (self->state == W_PENDING)
        return PyUnicode_FromString("<ReadWaiter pending>");
    if (self->state == W_CANCELLED)
        return PyUnicode_FromString("<ReadWaiter cancelled>");
    return PyUnicode_FromFormat("<ReadWaiter finished result=%R>", self->result);
}

/* ------------------------------------------------------------- lifetime */

static int
w_traverse(WaiterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->cb);
    Py_VISIT(self->ctx);
    Py_VISIT(self->more);
    Py_VISIT(self->result);
    Py_VISIT(self->cancel_msg);
    return 0;
}

static int
w_clear(WaiterObject *self)
{
    self->cb_task = 0;
    Py_CLEAR(self->loop);
    Py_CLEAR(self->cb);
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->more);
    Py_CLEAR(self->result);
    Py_CLEAR(self->cancel_msg);
    return 0;
}

#define WAITER_FREELIST_MAX 16
static WaiterObject *freelist[WAITER_FREELIST_MAX];
static int freelist_n;

static void
w_dealloc(WaiterObject *self)
{
    PyObject_GC_UnTrack(self);
    w_clear(self);
    if (freelist_n < WAITER_FREELIST_MAX) {
        freelist[freelist_n++] = self;
        return;
    }
    PyObject_GC_Del(self);
}

PyObject *
waiter_new(PyObject *loop)
{
    WaiterObject *w;
    if (freelist_n > 0) {
        w = freelist[--freelist_n];
        (void)PyObject_Init((PyObject *)w, &WaiterType);
    } else {
        w = PyObject_GC_New(WaiterObject, &WaiterType);
        if (w == NULL)
            return NULL;
    }
    w->loop = Py_NewRef(loop);
    w->cb = w->ctx = w->more = w->result = w->cancel_msg = NULL;
    w->state = W_PENDING;
    w->blocking = 0;
    w->cb_task = 0;
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

/* ReadWaiter(loop) */
static PyObject *
w_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwds)
{
    PyObject *loop;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0)
            || !PyArg_ParseTuple(args, "O:ReadWaiter", &loop)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "ReadWaiter() takes no keyword arguments");
        return NULL;
    }
    return waiter_new(loop);
}

static PyMethodDef w_methods[] = {
    {"result", (PyCFunction)w_result, METH_NOARGS,
     "None once finished; raises CancelledError once cancelled, InvalidStateError before."},
    {"exception", (PyCFunction)w_exception, METH_NOARGS,
     "None once finished (a waiter holds no exception); raises as result() otherwise."},
    {"done", (PyCFunction)w_done, METH_NOARGS, "True once finished or cancelled."},
    {"cancelled", (PyCFunction)w_cancelled, METH_NOARGS, "True once cancelled."},
    {"get_loop", (PyCFunction)w_get_loop, METH_NOARGS, "The loop the read's task runs on."},
    {"set_result", (PyCFunction)w_set_result, METH_O,
     "Finish it; its callbacks are scheduled with loop.call_soon."},
    {"add_done_callback", (PyCFunction)(void (*)(void))w_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, "add_done_callback(fn, *, context=None), as a Future's."},
    {"remove_done_callback", (PyCFunction)w_remove_done_callback, METH_O,
     "Remove fn from the callbacks; returns how many were removed."},
    {"cancel", (PyCFunction)(void (*)(void))w_cancel, METH_FASTCALL | METH_KEYWORDS,
     "cancel(msg=None): True if it was pending; its callbacks are scheduled."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef w_getset[] = {
    {"_asyncio_future_blocking", (getter)w_get_blocking, (setter)w_set_blocking,
     "Set while a task waits on it (the protocol asyncio.Task follows).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods w_as_async = {
    .am_await = w_await,
};

static PyTypeObject WaiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.ReadWaiter",
    .tp_basicsize = sizeof(WaiterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ReadWaiter(loop)\n--\n\n"
              "The future a waiting read's task waits on (native/readwaiter.c): what "
              "InputPipe.arm_waiter returns with the C extension.",
    .tp_dealloc = (destructor)w_dealloc,
    .tp_traverse = (traverseproc)w_traverse,
    .tp_clear = (inquiry)w_clear,
    .tp_repr = (reprfunc)w_repr,
    .tp_getattr = (getattrfunc)w_getattr,
    .tp_getattro = (getattrofunc)w_getattro,
    .tp_setattro = (setattrofunc)w_setattro,
    .tp_as_async = &w_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)w_iternext,
    .tp_methods = w_methods,
    .tp_getset = w_getset,
    .tp_new = w_new,
};

int
waiter_init(PyObject *module)
{
    const InternName names[] = {
        {&s_context, "context"}, {&s_msg, "msg"},
        {&s_blocking, "_asyncio_future_blocking"}, {&s_result, "result"},
        {&s_get_loop, "get_loop"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    none_fn = PyCFunction_New(&none_def, NULL);
    if (none_fn == NULL || PyType_Ready(&WaiterType) < 0)
        return -1;
    PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
    if (exc == NULL)
        return -1;
    cancelled_error = PyObject_GetAttrString(exc, "CancelledError");
    invalid_state_error = PyObject_GetAttrString(exc, "InvalidStateError");
    Py_DECREF(exc);
    if (cancelled_error == NULL || invalid_state_error == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "ReadWaiter", (PyObject *)&WaiterType);
}

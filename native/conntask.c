/*
 * conntask.c -- a connection handler's task stepped in C.
 *
 * Why: asyncio.Task waits on a read's ReadWaiter through lookups by name
 * (zerg/_conntask.py says which): about 2,800 instructions per message at
 * level 1, around a coroutine step of about 5,900.
 *
 * What: ConnTask._step and ConnTask._wakeup in C, and the wait on a read
 * without asyncio's protocol: when the coroutine yields a pending
 * ReadWaiter of the task's loop, the waiter keeps the task itself
 * (waiter_park, readwaiter.c) and its completion calls conntask_wakeup
 * (wake.c runs it in place, or queues the task's _wakeup).  Everything else
 * -- a pending cancellation, a thrown exception, a finished or odd task, and
 * whatever the coroutine returns, raises or yields besides a read's wait --
 * goes to the Python methods (zerg._conntask.ConnTask, the reference):
 * _step whole, or _after_send with the step's outcome.
 *
 * How: ConnTask's __slots__ are read in place (bind_conntask keeps their
 * offsets, as bind_connection does); Future.done is called through its C
 * function; the running task is recorded in asyncio's _current_tasks dict
 * (what asyncio.current_task reads) directly, or through asyncio's
 * _enter_task/_leave_task where that dict is not there.
 *
 * Rules: as speedups.c -- reference counts written out on every path, every
 * error propagated, the GIL held throughout.
 */
#include "speedups.h"

static PyTypeObject *ct_type;       /* zerg._conntask.ConnTask */
static Py_ssize_t o_coro, o_context, o_loop, o_fut_waiter, o_must_cancel;
static PyObject *ref_step, *ref_wakeup, *fn_after_send;
static PyCFunction fut_done;        /* asyncio.Future.done's C function, or NULL */
static PyObject *s_done, *s_wakeup;
static PyObject *outcome[3];        /* YIELDED, RETURNED, RAISED as ints */

/* 1 when the task's future part is done, 0 when not, -1 on error. */
static int
task_done(PyObject *task)
{
    PyObject *r = fut_done != NULL ? fut_done(task, NULL) : PyObject_CallMethodNoArgs(task, s_done);
    if (r == NULL)
        return -1;
    int done = PyObject_IsTrue(r);
    Py_DECREF(r);
    return done;
}

/* asyncio's record of the task running on loop: 0, or -1 with the error
 * asyncio's own functions raise. */
static int
enter_task(PyObject *loop, PyObject *task)
{
    PyObject *tasks = wake_current_tasks();
    if (tasks == NULL)
        return wake_call_task_hook(0, loop, task);
    /* One lookup: the task is stored unless one is there already (this task
     * there already would mean its coroutine runs, which the send refuses). */
    PyObject *cur = PyDict_SetDefault(tasks, loop, task);     /* borrowed */
    if (cur == NULL)
        return -1;
    if (cur != task) {
        PyErr_Format(PyExc_RuntimeError,
                     "Cannot enter into task %R while another task %R is being executed.",
                     task, cur);
        return -1;
    }
    return 0;
}

static int
leave_task(PyObject *loop, PyObject *task)
{
    PyObject *tasks = wake_current_tasks();
    if (tasks == NULL)
        return wake_call_task_hook(1, loop, task);
    PyObject *cur = PyDict_GetItemWithError(tasks, loop);     /* borrowed */
    if (cur != task) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_RuntimeError,
                         "Leaving task %R does not match the current task %R.", task,
                         cur != NULL ? cur : Py_None);
        return -1;
    }
    return PyDict_DelItem(tasks, loop);
}

/* The step's outcome to _after_send: st and *res as PyIter_Send left them
 * (the exception set for PYGEN_ERROR).  0, or -1 with an error. */
static int
after_send(PyObject *task, PySendResult st, PyObject *res)
{
    PyObject *value = st == PYGEN_ERROR ? fetch_exception() : res;
    if (value == NULL)
        return -1;
    PyObject *args[3] = {task, outcome[st == PYGEN_NEXT ? 0 : st == PYGEN_RETURN ? 1 : 2], value};
    PyObject *r = PyObject_Vectorcall(fn_after_send, args, 3, NULL);
    Py_DECREF(value);
    return call_ok(r);
}

/* ConnTask._step() of a pending task with no cancellation pending: 0, or -1
 * with an error (what the reference would raise). */
static int
step(PyObject *task)
{
    PyObject *coro = FIELD(task, o_coro), *loop = FIELD(task, o_loop);
    int done = coro == NULL || loop == NULL || FIELD(task, o_context) == NULL
               || FIELD(task, o_must_cancel) != Py_False ? 1 : task_done(task);
    if (done < 0)
        return -1;
    if (done)       /* the reference raises what is wrong, or throws the cancellation */
        return call_ok(ref_call(ref_step, task, NULL, 0));
    Py_INCREF(task);        /* the coroutine's code may drop any of these */
    Py_INCREF(coro);
    Py_INCREF(loop);
    field_set(task, o_fut_waiter, Py_NewRef(Py_None));
    int rc = enter_task(loop, task);
    if (rc == 0) {
        PyObject *res = NULL;
        PySendResult st = PyIter_Send(coro, Py_None, &res);
        /* A read's wait: the waiter keeps the task (no cancellation asked
         * for during the step: _wait_for passes that on to the waiter). */
        if (st == PYGEN_NEXT && waiter_check(res) && FIELD(task, o_must_cancel) == Py_False
                && waiter_park(res, task, FIELD(task, o_context), loop)) {
            field_set(task, o_fut_waiter, res);
        } else {
            rc = after_send(task, st, res);
        }
        PyObject *exc = rc < 0 ? fetch_exception() : NULL;
        if (leave_task(loop, task) < 0) {
            Py_XDECREF(exc);        /* as a finally clause that raises */
            rc = -1;
        } else if (exc != NULL) {
            restore_exception(exc);
        }
    }
    Py_DECREF(loop);
    Py_DECREF(coro);
    Py_DECREF(task);
    return rc;
}

/* ConnTask._wakeup(future), also what wake.c runs in place. */
PyObject *
conntask_wakeup(PyObject *task, PyObject *fut)
{
    if (!Py_IS_TYPE(task, ct_type) || !waiter_done_ok(fut))
        return ref_call(ref_wakeup, task, &fut, 1);     /* result() raises, or another future */
    if (step(task) < 0)
        return NULL;
    Py_RETURN_NONE;
}

int
conntask_check(PyObject *o)
{
    return ct_type != NULL && Py_IS_TYPE(o, ct_type);
}

/* ConnTask._step(exc=None) */
static PyObject *
ct_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, ct_type) || nargs > 1 || (nargs == 1 && args[0] != Py_None)
            || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0))
        return ref_call_kw(ref_step, self, args, nargs, kwnames);
    if (step(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef ct_methods[] = {
    {"_step", (PyCFunction)(void (*)(void))ct_step, METH_FASTCALL | METH_KEYWORDS,
     "Run the coroutine to its next wait (C, native/conntask.c)."},
    {"_wakeup", (PyCFunction)conntask_wakeup, METH_O,
     "The future waited on is done: step (C, native/conntask.c)."},
    {NULL, NULL, 0, NULL},
};
static PyObject **ct_refs[] = {&ref_step, &ref_wakeup};

/* asyncio.Future.done's C function, when it is a plain method descriptor
 * taking no arguments (CPython's _asyncio): called without a lookup. */
static PyCFunction
future_done_function(PyTypeObject *cls)
{
    PyObject *d = PyObject_GetAttr((PyObject *)cls, s_done);   /* the descriptor itself */
    PyCFunction fn = NULL;
    if (d == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (Py_IS_TYPE(d, &PyMethodDescr_Type)) {
        PyMethodDef *def = ((PyMethodDescrObject *)d)->d_method;
        if (def->ml_flags == METH_NOARGS && PyType_IsSubtype(cls, PyDescr_TYPE(d)))
            fn = def->ml_meth;      /* static in _asyncio, which the class keeps loaded */
    }
    Py_DECREF(d);
    return fn;
}

/* bind_conntask(ConnTask) */
static PyObject *
sp_bind_conntask(PyObject *Py_UNUSED(module), PyObject *cls_obj)
{
    if (!PyType_Check(cls_obj)) {
        PyErr_SetString(PyExc_TypeError, "bind_conntask: ConnTask must be a class");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)cls_obj;
    if (ct_type != NULL) {
        if (cls != ct_type) {
            PyErr_SetString(PyExc_RuntimeError, "bind_conntask: already bound to another class");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *after = PyObject_GetAttrString(cls_obj, "_after_send");
    if (after == NULL)
        return NULL;
    if (!PyFunction_Check(after)) {
        PyErr_SetString(PyExc_TypeError, "bind_conntask: ConnTask._after_send must be a function");
        Py_DECREF(after);
        return NULL;
    }
    if (slot_offset(cls, "_coro", &o_coro) < 0 || slot_offset(cls, "_context", &o_context) < 0
            || slot_offset(cls, "_task_loop", &o_loop) < 0
            || slot_offset(cls, "_fut_waiter", &o_fut_waiter) < 0
            || slot_offset(cls, "_must_cancel", &o_must_cancel) < 0
            || install_methods(cls, ct_methods, ct_refs, N_METHODS(ct_methods)) < 0) {
        Py_DECREF(after);
        return NULL;
    }
    fn_after_send = after;
    fut_done = future_done_function(cls);
    ct_type = (PyTypeObject *)Py_NewRef(cls_obj);
    Py_RETURN_NONE;
}

static PyMethodDef conntask_functions[] = {
    {"bind_conntask", (PyCFunction)sp_bind_conntask, METH_O,
     "bind_conntask(ConnTask): its _step and _wakeup in C, and a read's wait kept by the "
     "ReadWaiter (native/conntask.c)."},
    {NULL, NULL, 0, NULL},
};

int
conntask_init(PyObject *module)
{
    const InternName names[] = {{&s_done, "done"}, {&s_wakeup, "_wakeup"}};
    if (INTERN_ALL(names) < 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if ((outcome[i] = PyLong_FromLong(i)) == NULL)
            return -1;
    return PyModule_AddFunctions(module, conntask_functions);
}

/* task._wakeup, bound (for loop.call_soon): a new reference, or NULL. */
PyObject *
conntask_bound_wakeup(PyObject *task)
{
    return PyObject_GetAttr(task, s_wakeup);
}

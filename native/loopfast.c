/*
 * loopfast.c -- the reactor loop's scheduling in C (zerg._speedups).
 *
 * Why: every task wake-up of levels 1-3 goes through asyncio's pure-Python
 * scheduling: a future's done-callback is registered with loop.call_soon
 * (call_soon, _call_soon and Handle.__init__: three Python frames), and the
 * loop iteration runs it with Handle._run (a fourth).  uvloop runs the same
 * machinery in C.  Here the reactor loop's call_soon, create_future and
 * get_debug (which asyncio's C Future calls at every creation), its
 * iteration (_run_once), and the _run of the handles it makes, are C
 * methods.
 *
 * What stays: the reactor loop is still asyncio's SelectorEventLoop (its
 * timers, call_soon_threadsafe, the selector, debug mode), and the handles
 * are instances of zerg._reactor.Handle, a subclass of asyncio.Handle with
 * the same __slots__ -- isinstance, repr, cancel() and the CPython test suite
 * see asyncio's own types.  The C methods handle the common case and
 * otherwise call the method they replaced: a closed loop, debug mode (thread
 * checks and source tracebacks), unusual arguments, a due purge of cancelled
 * timers.
 *
 * Rules: as speedups.c.
 */
#include "speedups.h"

#include <string.h>

static PyTypeObject *loop_type, *handle_type;
static PyObject *future_type;

static struct {
    Py_ssize_t callback, args, cancelled, loop, source_traceback, repr, context;
} H;

/* ReactorLoop's __slots__ for the attributes asyncio's BaseEventLoop keeps
 * (and _future_kw): read in place here, where an instance __dict__ lookup
 * by name cost about 240 instructions, several per message at levels 1-3. */
static struct {
    Py_ssize_t closed, debug, ready, scheduled, stopping, selector, clock_resolution, future_kw;
} L;

/* self.<name>, a new reference: a ReactorLoop's slot (off), read in place,
 * or by name for anything else (a subclass may shadow it) or an unset slot
 * (the AttributeError is the lookup's). */
static inline PyObject *
loop_attr(PyObject *self, Py_ssize_t off, PyObject *name)
{
    if (Py_IS_TYPE(self, loop_type)) {
        PyObject *v = FIELD(self, off);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(self, name);
}

/* The replaced methods: BaseEventLoop.call_soon, create_future and
 * get_debug, and asyncio.Handle._run. */
static PyObject *ref_call_soon, *ref_create_future, *ref_get_debug, *ref_run;

static PyObject *s_closed, *s_debug, *s_ready, *s_append, *s_failed, *s_loop_kw;
static PyObject *s_future_kw, *s_loop, *s_context, *empty_args;

/* An attribute of the loop that must be exactly False for the fast path:
 * 1 it is, 0 it is not (or is missing), -1 on error. */
static int
attr_is_false(PyObject *self, Py_ssize_t off, PyObject *name)
{
    PyObject *v = loop_attr(self, off, name);
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int r = v == Py_False;
    Py_DECREF(v);
    return r;
}

/* ReactorLoop.call_soon(callback, *args, context=None) */
static PyObject *
loop_call_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context = Py_None;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        if (PyTuple_GET_SIZE(kwnames) != 1
                || (name != s_context && (!PyUnicode_Check(name)
                                          || PyUnicode_CompareWithASCIIString(name, "context"))))
            return ref_call_kw(ref_call_soon, self, args, nargs, kwnames);
        context = args[nargs];
    }
    if (nargs < 1)
        return ref_call_kw(ref_call_soon, self, args, nargs, kwnames);
    int ok = attr_is_false(self, L.closed, s_closed);
    if (ok > 0)
        ok = attr_is_false(self, L.debug, s_debug);
    if (ok < 0)
        return NULL;
    if (!ok)        /* closed (it raises), or debug mode (checks, tracebacks) */
        return ref_call_kw(ref_call_soon, self, args, nargs, kwnames);
    PyObject *ready = loop_attr(self, L.ready, s_ready);
    if (ready == NULL)
        return NULL;
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    PyObject *cbargs = PyTuple_New(nargs - 1);
    PyObject *h = handle_type->tp_alloc(handle_type, 0);
    if (ctx == NULL || cbargs == NULL || h == NULL) {
        Py_XDECREF(ctx);
        Py_XDECREF(cbargs);
        Py_XDECREF(h);
        Py_DECREF(ready);
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(cbargs, i - 1, Py_NewRef(args[i]));
    /* asyncio.Handle.__init__, outside debug mode */
    field_set(h, H.context, ctx);
    field_set(h, H.loop, Py_NewRef(self));
    field_set(h, H.callback, Py_NewRef(args[0]));
    field_set(h, H.args, cbargs);
    field_set(h, H.cancelled, Py_NewRef(Py_False));
    field_set(h, H.repr, Py_NewRef(Py_None));
    field_set(h, H.source_traceback, Py_NewRef(Py_None));
    PyObject *r = PyObject_CallMethodOneArg(ready, s_append, h);
    Py_DECREF(ready);
    if (r == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(r);
    return h;
}

/* ReactorLoop.create_future(): Future(loop=self).  A call with a keyword
 * builds a dict of it each time (the C Future has no vectorcall); the loop
 * keeps one, {"loop": loop} in its _future_kw (ReactorLoop.__init__), passed
 * to the type's __new__ and __init__ as type() would. */
static PyObject *
loop_create_future(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyTypeObject *tp = (PyTypeObject *)future_type;
    PyObject *kw = loop_attr(self, L.future_kw, s_future_kw);
    if (kw == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
    } else if (!PyDict_CheckExact(kw) || PyDict_GET_SIZE(kw) != 1
               || PyDict_GetItemWithError(kw, s_loop) != self || tp->tp_new == NULL
               || tp->tp_init == NULL) {
        Py_CLEAR(kw);
        if (PyErr_Occurred())
            return NULL;
    }
    if (kw == NULL) {
        PyObject *stack[2] = {NULL, self};
        return PyObject_Vectorcall(future_type, stack + 1, 0 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                   s_loop_kw);
    }
    PyObject *fut = tp->tp_new(tp, empty_args, kw);
    if (fut != NULL && tp->tp_init(fut, empty_args, kw) < 0)
        Py_CLEAR(fut);
    Py_DECREF(kw);
    return fut;
}

int
loop_runs_plain(PyObject *loop)
{
    if (loop_type == NULL || !Py_IS_TYPE(loop, loop_type))
        return 0;
    int ok = attr_is_false(loop, L.closed, s_closed);
    return ok > 0 ? attr_is_false(loop, L.debug, s_debug) : ok;
}

/* ReactorLoop.get_debug(): asyncio's C Future asks it at every creation. */
static PyObject *
loop_get_debug(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *v = loop_attr(self, L.debug, s_debug);
    if (v == NULL || PyBool_Check(v))
        return v;
    Py_DECREF(v);
    return ref_call_kw(ref_get_debug, self, NULL, 0, NULL);
}

/* Handle._run: ctx.run(callback, *args), as asyncio.Handle._run; a callback
 * that raises goes to the loop's exception handler (Handle._failed). */
static PyObject *
handle_run(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *ctx = FIELD(self, H.context), *cb = FIELD(self, H.callback);
    PyObject *args = FIELD(self, H.args);
    if (ctx == NULL || cb == NULL || args == NULL || !PyContext_CheckExact(ctx)
            || !PyTuple_CheckExact(args))
        return ref_call_kw(ref_run, self, NULL, 0, NULL);
    /* The callback may cancel its own handle (dropping these): hold them. */
    Py_INCREF(ctx);
    Py_INCREF(cb);
    Py_INCREF(args);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
                                (size_t)PyTuple_GET_SIZE(args), NULL);
        if (PyContext_Exit(ctx) < 0)
            Py_CLEAR(r);
    }
    Py_DECREF(ctx);
    Py_DECREF(cb);
    Py_DECREF(args);
    if (r != NULL) {
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return NULL;
    PyObject *stack[2] = {self, exc};
    r = PyObject_VectorcallMethod(s_failed, stack, 2, NULL);
    Py_DECREF(exc);
    return r;
}

/* ------------------------------------------------------------ _run_once
 *
 * asyncio's BaseEventLoop._run_once, step for step: purge cancelled timers
 * from the heap's head, the select timeout, select and the selector's
 * events, due timers to the ready queue, then the handles that were ready.
 * Python's version makes a range and its iterator per iteration and runs a
 * few dozen lines; a busy reactor runs thousands of iterations a second.
 * What it leaves to Python: the timer purge once cancelled timers pile up
 * (the whole iteration goes to asyncio's method then), the loop's time(),
 * the selector, and each handle's _run (a zerg Handle's is called here
 * directly); in debug mode, the iteration is asyncio's own, and a handle
 * run after a callback turned debug mode on goes through _run_debug. */

static PyObject *ref_run_once;
static PyObject *fn_heappop, *deque_type, *d_popleft, *d_append, *int_zero, *int_one,
    *int_max_timeout;
static PyObject *s_scheduled, *s_tcc, *s_stopping, *s_selector, *s_select, *s_process_events,
    *s_time, *s_clock_resolution, *s_when, *s_cancelled, *s_run, *s_run_debug;

/* bool(o.name): 1, 0 or -1 */
static int
attr_true(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* h._cancelled: 1, 0 or -1 */
static int
handle_cancelled(PyObject *h)
{
    if (Py_IS_TYPE(h, handle_type) && FIELD(h, H.cancelled) != NULL)
        return PyObject_IsTrue(FIELD(h, H.cancelled));
    return attr_true(h, s_cancelled);
}

/* heapq.heappop(heap)._scheduled = False: the popped handle, or NULL. */
static PyObject *
pop_timer(PyObject *heap)
{
    PyObject *h = PyObject_CallOneArg(fn_heappop, heap);
    if (h != NULL && PyObject_SetAttr(h, s_scheduled, Py_False) < 0)
        Py_CLEAR(h);
    return h;
}

/* The cancelled timers at the heap's head go (1), or the purge of all of
 * them is due and asyncio's iteration must run instead (0); -1 on error. */
static int
drop_cancelled_head(PyObject *self, PyObject *sched)
{
    Py_ssize_t n = PyList_GET_SIZE(sched);
    if (n > 100) {                  /* _MIN_SCHEDULED_TIMER_HANDLES */
        PyObject *c = PyObject_GetAttr(self, s_tcc);
        if (c == NULL)
            return -1;
        double cancelled = PyFloat_AsDouble(c);
        Py_DECREF(c);
        if (cancelled == -1.0 && PyErr_Occurred())
            return -1;
        if (cancelled / (double)n > 0.5)    /* _MIN_CANCELLED_TIMER_HANDLES_FRACTION */
            return 0;
    }
    while (PyList_GET_SIZE(sched) > 0) {
        int c = handle_cancelled(PyList_GET_ITEM(sched, 0));
        if (c <= 0)
            return c < 0 ? -1 : 1;
        PyObject *count = PyObject_GetAttr(self, s_tcc), *less = NULL;
        if (count != NULL)
            less = PyNumber_Subtract(count, int_one);
        Py_XDECREF(count);
        if (less == NULL)
            return -1;
        int rc = PyObject_SetAttr(self, s_tcc, less);
        Py_DECREF(less);
        PyObject *h = rc < 0 ? NULL : pop_timer(sched);
        if (h == NULL)
            return -1;
        Py_DECREF(h);
    }
    return 1;
}

/* min(max(0, when - self.time()), MAXIMUM_SELECT_TIMEOUT), as asyncio. */
static PyObject *
timer_timeout(PyObject *self, PyObject *first)
{
    PyObject *when = PyObject_GetAttr(first, s_when);
    PyObject *now = when == NULL ? NULL : PyObject_CallMethodNoArgs(self, s_time);
    PyObject *t = now == NULL ? NULL : PyNumber_Subtract(when, now);
    Py_XDECREF(when);
    Py_XDECREF(now);
    if (t == NULL)
        return NULL;
    int pos = PyObject_RichCompareBool(t, int_zero, Py_GT);
    if (pos <= 0) {
        Py_DECREF(t);
        return pos < 0 ? NULL : Py_NewRef(int_zero);
    }
    int over = PyObject_RichCompareBool(int_max_timeout, t, Py_LT);
    if (over != 0) {
        Py_DECREF(t);
        return over < 0 ? NULL : Py_NewRef(int_max_timeout);
    }
    return t;
}

/* The loop's debug flag now: 1 on, 0 off, -1 error. */
static int
debug_on(PyObject *self)
{
    int off = attr_is_false(self, L.debug, s_debug);
    return off < 0 ? -1 : off ? 0 : attr_true(self, s_debug);
}

static PyObject *
loop_run_once(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *sched = NULL, *ready = NULL, *timeout = NULL, *sel = NULL, *events = NULL;
    PyObject *end = NULL, *r;
    int dbg = debug_on(self);
    if (dbg != 0)
        return dbg < 0 ? NULL : ref_call_kw(ref_run_once, self, NULL, 0, NULL);
    sched = loop_attr(self, L.scheduled, s_scheduled);
    ready = sched == NULL ? NULL : loop_attr(self, L.ready, s_ready);
    if (ready == NULL)
        goto fail;
    int ok = PyList_CheckExact(sched) && Py_IS_TYPE(ready, (PyTypeObject *)deque_type);
    if (ok)
        ok = drop_cancelled_head(self, sched);
    if (ok <= 0) {
        Py_DECREF(sched);
        Py_DECREF(ready);
        return ok < 0 ? NULL : ref_call_kw(ref_run_once, self, NULL, 0, NULL);
    }
    /* the select timeout */
    Py_ssize_t nready = PyObject_Length(ready);
    if (nready < 0)
        goto fail;
    int stopping = 0;
    if (nready == 0) {
        PyObject *v = loop_attr(self, L.stopping, s_stopping);
        stopping = v == NULL ? -1 : PyObject_IsTrue(v);
        Py_XDECREF(v);
    }
    if (stopping < 0)
        goto fail;
    if (nready || stopping)
        timeout = Py_NewRef(int_zero);
    else if (PyList_GET_SIZE(sched) > 0)
        timeout = timer_timeout(self, PyList_GET_ITEM(sched, 0));
    else
        timeout = Py_NewRef(Py_None);
    if (timeout == NULL)
        goto fail;
    /* I/O; an empty event list needs no _process_events (it would loop over
     * nothing) */
    sel = loop_attr(self, L.selector, s_selector);
    events = sel == NULL ? NULL : PyObject_CallMethodOneArg(sel, s_select, timeout);
    if (events == NULL)
        goto fail;
    if (!PyList_CheckExact(events) || PyList_GET_SIZE(events) != 0) {
        r = PyObject_CallMethodOneArg(self, s_process_events, events);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
    }
    Py_CLEAR(events);
    /* 'later' callbacks that are due */
    PyObject *now = PyObject_CallMethodNoArgs(self, s_time), *res = NULL;
    if (now != NULL)
        res = loop_attr(self, L.clock_resolution, s_clock_resolution);
    if (res != NULL)
        end = PyNumber_Add(now, res);
    Py_XDECREF(now);
    Py_XDECREF(res);
    if (end == NULL)
        goto fail;
    Py_SETREF(sched, loop_attr(self, L.scheduled, s_scheduled));
    if (sched == NULL)
        goto fail;
    if (!PyList_CheckExact(sched)) {
        PyErr_SetString(PyExc_TypeError, "loop._scheduled is not a list");
        goto fail;
    }
    while (PyList_GET_SIZE(sched) > 0) {
        PyObject *when = PyObject_GetAttr(PyList_GET_ITEM(sched, 0), s_when);
        int later = when == NULL ? -1 : PyObject_RichCompareBool(when, end, Py_GE);
        Py_XDECREF(when);
        if (later != 0) {
            if (later < 0)
                goto fail;
            break;
        }
        PyObject *h = pop_timer(sched);
        if (h == NULL)
            goto fail;
        PyObject *stack[2] = {ready, h};
        r = PyObject_Vectorcall(d_append, stack, 2, NULL);
        Py_DECREF(h);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
    }
    /* the handles ready now; what they schedule runs next time */
    Py_ssize_t ntodo = PyObject_Length(ready);
    if (ntodo < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *h = PyObject_Vectorcall(d_popleft, &ready, 1, NULL);
        if (h == NULL)
            goto fail;
        int c = handle_cancelled(h);
        if (c == 0) {
            dbg = debug_on(self);
            if (dbg < 0)
                r = NULL;
            else if (dbg)
                r = PyObject_CallMethodOneArg(self, s_run_debug, h);
            else if (Py_IS_TYPE(h, handle_type))
                r = handle_run(h, NULL);
            else
                r = PyObject_CallMethodNoArgs(h, s_run);
            if (r == NULL)
                c = -1;
            else
                Py_DECREF(r);
        }
        Py_DECREF(h);
        if (c < 0)
            goto fail;
    }
    Py_DECREF(sched);
    Py_DECREF(ready);
    Py_DECREF(timeout);
    Py_DECREF(sel);
    Py_DECREF(end);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(sched);
    Py_XDECREF(ready);
    Py_XDECREF(timeout);
    Py_XDECREF(sel);
    Py_XDECREF(events);
    Py_XDECREF(end);
    return NULL;
}

static PyMethodDef loop_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "Arrange for a callback to be called as soon as possible (C fast path)."},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "Create a Future object attached to the loop (C fast path)."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS,
     "True when the loop is in debug mode (C fast path)."},
    {"_run_once", (PyCFunction)loop_run_once, METH_NOARGS,
     "Run one full iteration of the event loop (asyncio's, in C)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef handle_methods[] = {
    {"_run", (PyCFunction)handle_run, METH_NOARGS, "Run the callback (C fast path)."},
    {NULL, NULL, 0, NULL},
};

static PyObject **loop_refs[] = {&ref_call_soon, &ref_create_future, &ref_get_debug,
                                  &ref_run_once};
static PyObject **handle_refs[] = {&ref_run};
_Static_assert(sizeof(loop_refs) / sizeof(loop_refs[0]) == N_METHODS(loop_methods),
               "one reference slot per loop method");
_Static_assert(sizeof(handle_refs) / sizeof(handle_refs[0]) == N_METHODS(handle_methods),
               "one reference slot per handle method");

/* bind_loop(ReactorLoop, Handle, Future): put the C methods in the two
 * classes.  Once per process; a later call with the same classes changes
 * nothing. */
static PyObject *
sp_bind_loop(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyTypeObject *loop, *handle;
    PyObject *future;
    if (!PyArg_ParseTuple(args, "O!O!O!:bind_loop", &PyType_Type, &loop, &PyType_Type, &handle,
                          &PyType_Type, &future))
        return NULL;
    if (loop_type != NULL) {
        if (loop != loop_type || handle != handle_type) {
            PyErr_SetString(PyExc_RuntimeError, "bind_loop: already bound to other classes");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    struct { const char *name; Py_ssize_t *off; } fields[] = {
        {"_callback", &H.callback}, {"_args", &H.args}, {"_cancelled", &H.cancelled},
        {"_loop", &H.loop}, {"_source_traceback", &H.source_traceback}, {"_repr", &H.repr},
        {"_context", &H.context},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (slot_offset(handle, fields[i].name, fields[i].off) < 0)
            return NULL;
    }
    struct { const char *name; Py_ssize_t *off; } loop_fields[] = {
        {"_closed", &L.closed}, {"_debug", &L.debug}, {"_ready", &L.ready},
        {"_scheduled", &L.scheduled}, {"_stopping", &L.stopping}, {"_selector", &L.selector},
        {"_clock_resolution", &L.clock_resolution}, {"_future_kw", &L.future_kw},
    };
    for (size_t i = 0; i < sizeof(loop_fields) / sizeof(loop_fields[0]); i++) {
        if (slot_offset(loop, loop_fields[i].name, loop_fields[i].off) < 0)
            return NULL;
        if (*loop_fields[i].off & SSIZE_FIELD) {
            PyErr_Format(PyExc_TypeError, "bind_loop: %s is a counter", loop_fields[i].name);
            return NULL;
        }
    }
    if (handle->tp_basicsize < (Py_ssize_t)sizeof(PyObject)) {
        PyErr_SetString(PyExc_TypeError, "bind_loop: not a handle class");
        return NULL;
    }
    if (install_methods(loop, loop_methods, loop_refs, N_METHODS(loop_methods)) < 0)
        return NULL;
    if (install_methods(handle, handle_methods, handle_refs, N_METHODS(handle_methods)) < 0) {
        PyObject *exc = fetch_exception();
        for (int i = 0; i < N_METHODS(loop_methods); i++) {
            (void)PyObject_DelAttrString((PyObject *)loop, loop_methods[i].ml_name);
            Py_CLEAR(*loop_refs[i]);
        }
        if (exc != NULL)
            restore_exception(exc);
        return NULL;
    }
    loop_type = (PyTypeObject *)Py_NewRef((PyObject *)loop);
    handle_type = (PyTypeObject *)Py_NewRef((PyObject *)handle);
    future_type = Py_NewRef(future);
    Py_RETURN_NONE;
}

static PyMethodDef loopfast_functions[] = {
    {"bind_loop", (PyCFunction)sp_bind_loop, METH_VARARGS,
     "bind_loop(ReactorLoop, Handle, Future): call_soon, create_future, get_debug and "
     "Handle._run in C."},
    {NULL, NULL, 0, NULL},
};

int
loopfast_init(PyObject *module)
{
    const InternName names[] = {
        {&s_closed, "_closed"}, {&s_debug, "_debug"}, {&s_ready, "_ready"},
        {&s_append, "append"}, {&s_failed, "_failed"}, {&s_future_kw, "_future_kw"},
        {&s_loop, "loop"}, {&s_context, "context"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    empty_args = PyTuple_New(0);
    if (empty_args == NULL)
        return -1;
    const InternName more[] = {
        {&s_scheduled, "_scheduled"}, {&s_tcc, "_timer_cancelled_count"},
        {&s_stopping, "_stopping"}, {&s_selector, "_selector"}, {&s_select, "select"},
        {&s_process_events, "_process_events"}, {&s_time, "time"},
        {&s_clock_resolution, "_clock_resolution"}, {&s_when, "_when"},
        {&s_cancelled, "_cancelled"}, {&s_run, "_run"}, {&s_run_debug, "_run_debug"},
    };
    if (INTERN_ALL(more) < 0)
        return -1;
    /* asyncio's: heapq.heappop, collections.deque's popleft and append, and
     * MAXIMUM_SELECT_TIMEOUT (one day) */
    PyObject *heapq = PyImport_ImportModule("heapq");
    fn_heappop = heapq == NULL ? NULL : PyObject_GetAttrString(heapq, "heappop");
    Py_XDECREF(heapq);
    PyObject *coll = fn_heappop == NULL ? NULL : PyImport_ImportModule("collections");
    deque_type = coll == NULL ? NULL : PyObject_GetAttrString(coll, "deque");
    Py_XDECREF(coll);
    if (deque_type == NULL)
        return -1;
    if (!PyType_Check(deque_type)) {
        PyErr_SetString(PyExc_TypeError, "collections.deque is not a type");
        return -1;
    }
    /* the method descriptors, got through the type (since 3.12 a static
     * type's tp_dict is not to be read directly) */
    d_popleft = PyObject_GetAttrString(deque_type, "popleft");
    d_append = d_popleft == NULL ? NULL : PyObject_GetAttrString(deque_type, "append");
    if (d_append == NULL)
        return -1;
    if (!PyObject_TypeCheck(d_popleft, &PyMethodDescr_Type)
            || !PyObject_TypeCheck(d_append, &PyMethodDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "collections.deque's popleft/append are not methods");
        return -1;
    }
    int_zero = PyLong_FromLong(0);
    int_one = PyLong_FromLong(1);
    int_max_timeout = PyLong_FromLong(24 * 3600);
    if (int_zero == NULL || int_one == NULL || int_max_timeout == NULL)
        return -1;
    s_loop_kw = Py_BuildValue("(s)", "loop");
    if (s_loop_kw == NULL)
        return -1;
    return PyModule_AddFunctions(module, loopfast_functions);
}

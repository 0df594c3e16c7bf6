/*
 * wake.c -- a read's task resumed where its bytes are dispatched.
 *
 * Why: a level 1-3 read that had to wait was resumed through the loop: the
 * receive completion finished the read's waiter, which scheduled the task's
 * wake-up with call_soon (a Handle, an argument tuple, a deque append), and
 * the next pass of the loop's _run_once popped it and ran it.  uvloop runs
 * the same machinery in C; the C echo server has none of it.
 *
 * How: the waiter is a ReadWaiter (readwaiter.c), so its first done callback
 * -- the task's wake-up -- is in hand when the receive completion finishes
 * it.  wake_task() runs it right there, in the task's context, when
 *   - it is a C task's wake-up and the loop is a ReactorLoop that is neither
 *     closed nor in debug mode (call_soon's reference path keeps its checks
 *     and slow-callback warnings),
 *   - the dispatcher is harvesting (a thread-local flag it sets; cleared
 *     while a step runs, so whatever a step wakes is queued as usual),
 *   - no task is running on the loop (asyncio's _current_tasks),
 *   - the task has not run in place in this harvest yet (fairness: a flooded
 *     connection's task gets one step per harvest, as before; its other
 *     wake-ups are queued and run after the harvest);
 * otherwise it queues the wake-up as call_soon would have.  A ConnTask parked
 * in the waiter (conntask.c) is woken by wake_conntask under the same rules:
 * its C wake-up runs in place, or its _wakeup is queued.  A step that
 * raises anything but KeyboardInterrupt or SystemExit goes to the loop's
 * exception handler, as Handle._run does.
 *
 * What a task sees: what it would have seen a moment later.  Only the order
 * among tasks woken by one harvest changes: each runs as its bytes are
 * dispatched, as a Protocol's data_received does.
 *
 * Rules: as speedups.c -- reference counts written out on every path, every
 * error propagated, the GIL held throughout.
 */
#include "speedups.h"

#include <string.h>

static PyObject *current_tasks, *current_task_fn;
/* asyncio.tasks._enter_task/_leave_task, where _current_tasks is no dict. */
static PyObject *enter_task_fn, *leave_task_fn;
static PyTypeObject *task_type;

/* task_wakeup's method definition, learnt from the first one seen. */
static PyMethodDef *wakeup_def;
static PyObject *s_call_soon, *s_set_result, *s_done, *s_call_exception_handler, *kw_context;
static PyObject *s_message, *s_exception;

/* Wake-ups of reads run in place / queued instead (wake_counts()). */
static unsigned long long n_in_place, n_queued;

/* Set while the dispatcher harvests on this thread (wake_inline_begin). */
static _Thread_local int inline_ok;

/* The tasks that ran in place during this harvest: an open-addressing set of
 * identities (never dereferenced), emptied by moving to a new generation. */
#define RAN_SIZE 512
static _Thread_local struct { const void *task; unsigned gen; } ran[RAN_SIZE];
static _Thread_local unsigned ran_gen;

int
wake_inline_begin(void)
{
    int prev = inline_ok;
    if (!prev && ++ran_gen == 0)    /* a new harvest; generation 0 marks empty */
        ran_gen = 1;
    inline_ok = 1;
    return prev;
}

void
wake_inline_end(int prev)
{
    inline_ok = prev;
}

unsigned
wake_harvest_gen(void)
{
    return inline_ok ? ran_gen : 0;
}

/* 1 when task has not run in place in this harvest (it now counts as having
 * run), 0 when it has or the set is crowded. */
static int
first_run(const void *task)
{
    size_t h = ((size_t)task >> 4) * (size_t)0x9E3779B97F4A7C15ull;
    for (unsigned probe = 0; probe < 32; probe++) {
        size_t i = (h + probe) & (RAN_SIZE - 1);
        if (ran[i].gen != ran_gen) {
            ran[i].task = task;
            ran[i].gen = ran_gen;
            return 1;
        }
        if (ran[i].task == task)
            return 0;
    }
    return 0;
}

/* A C asyncio.Task's wakeup method (what the Task registers on a future). */
static int
is_task_wakeup(PyObject *cb)
{
    if (task_type == NULL || !PyCFunction_Check(cb))
        return 0;
    PyCFunctionObject *f = (PyCFunctionObject *)cb;
    if (f->m_ml == NULL || f->m_self == NULL || !PyObject_TypeCheck(f->m_self, task_type))
        return 0;
    if (f->m_ml == wakeup_def)
        return 1;
    if (f->m_ml->ml_name == NULL || strcmp(f->m_ml->ml_name, "task_wakeup") != 0)
        return 0;
    wakeup_def = f->m_ml;       /* the Task's one static definition */
    return 1;
}

/* The harvest (its ran_gen) and loop for which no_task_running found no
 * task running.  A step run in place enters and leaves its task, leaving
 * asyncio's record as it found it, so the answer holds for the rest of that
 * harvest: one lookup per harvest, not one per wake-up.  (A step that left
 * another task recorded makes the next in-place step's enter fail loudly.) */
static _Thread_local unsigned idle_gen;
static _Thread_local const void *idle_loop;

/* 1 when no task runs on loop now, 0 when one does, -1 on error. */
static int
no_task_running(PyObject *loop)
{
    if (inline_ok && idle_gen == ran_gen && idle_loop == (const void *)loop)
        return 1;
    if (current_tasks != NULL) {
        PyObject *t = PyDict_GetItemWithError(current_tasks, loop);
        if (t != NULL)
            return 0;
        if (PyErr_Occurred())
            return -1;
        if (inline_ok) {
            idle_gen = ran_gen;
            idle_loop = loop;
        }
        return 1;
    }
    PyObject *t = PyObject_CallOneArg(current_task_fn, loop);
    if (t == NULL)
        return -1;
    int r = t == Py_None;
    Py_DECREF(t);
    return r;
}

/* A step run in place raised: as Handle._run, KeyboardInterrupt and
 * SystemExit propagate (-1), anything else goes to the loop's exception
 * handler (0, or -1 if that fails).  cb is the callback, or the ConnTask
 * whose wake-up it was. */
static int
report(PyObject *loop, PyObject *cb, PyObject *arg)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return -1;
    PyObject *msg = PyUnicode_FromFormat(conntask_check(cb) ? "Exception in callback %R._wakeup(%R)"
                                                            : "Exception in callback %R(%R)",
                                         cb, arg);
    PyObject *ctx = msg == NULL ? NULL : PyDict_New();
    int rc = -1;
    if (ctx != NULL && PyDict_SetItem(ctx, s_message, msg) == 0
            && PyDict_SetItem(ctx, s_exception, exc) == 0) {
        PyObject *stack[2] = {loop, ctx};
        PyObject *r = PyObject_VectorcallMethod(s_call_exception_handler, stack, 2, NULL);
        if (r != NULL) {
            Py_DECREF(r);
            rc = 0;
        }
    }
    Py_XDECREF(ctx);
    Py_XDECREF(msg);
    Py_DECREF(exc);
    return rc;
}

PyObject *
wake_current_tasks(void)
{
    return current_tasks;
}

int
wake_call_task_hook(int leave, PyObject *loop, PyObject *task)
{
    PyObject *args[2] = {loop, task};
    return call_ok(PyObject_Vectorcall(leave ? leave_task_fn : enter_task_fn, args, 2, NULL));
}

int
wake_queue(PyObject *loop, PyObject *cb, PyObject *arg, PyObject *ctx)
{
    PyObject *stack[4] = {loop, cb, arg, ctx};
    PyObject *h = PyObject_VectorcallMethod(s_call_soon, stack, 3, kw_context);
    if (h == NULL)
        return -1;
    Py_DECREF(h);
    return 0;
}

/* cb(arg) now, in ctx -- or, with cb NULL, ConnTask task's wake-up: 0, or
 * -1 with an error to propagate. */
static int
run_in_place(PyObject *loop, PyObject *cb, PyObject *arg, PyObject *ctx, PyObject *task)
{
    if (PyContext_Enter(ctx) < 0) {     /* entered elsewhere: queue it, as call_soon would */
        PyErr_Clear();
        return cb != NULL ? wake_queue(loop, cb, arg, ctx) : wake_conntask(loop, task, arg, ctx, 0);
    }
    inline_ok = 0;
    PyObject *r = cb != NULL ? PyObject_CallOneArg(cb, arg) : conntask_wakeup(task, arg);
    inline_ok = 1;
    if (PyContext_Exit(ctx) < 0)
        Py_CLEAR(r);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    return report(loop, cb != NULL ? cb : task, arg);
}

/* 1 when the wake-up of task (a borrowed pointer) may run now, in ctx:
 * during a harvest, on a plain ReactorLoop with no task running, the task's
 * first in-place run of this harvest.  0 when it is to be queued, -1 on error. */
static int
may_run_now(PyObject *loop, const void *task, PyObject *ctx)
{
    int ok = inline_ok && PyContext_CheckExact(ctx);
    if (ok)
        ok = loop_runs_plain(loop);
    if (ok > 0)
        ok = no_task_running(loop);
    if (ok > 0)
        ok = first_run(task);
    if (ok >= 0 && inline_ok) {
        if (ok)
            n_in_place++;
        else
            n_queued++;
    }
    return ok;
}

int
wake_task(PyObject *loop, PyObject *cb, PyObject *arg, PyObject *ctx)
{
    int ok = 0;
    if (is_task_wakeup(cb))
        ok = may_run_now(loop, PyCFunction_GET_SELF(cb), ctx);
    else if (inline_ok)
        n_queued++;
    if (ok < 0)
        return -1;
    return ok ? run_in_place(loop, cb, arg, ctx, NULL) : wake_queue(loop, cb, arg, ctx);
}

int
wake_conntask(PyObject *loop, PyObject *task, PyObject *arg, PyObject *ctx, int in_place)
{
    int ok = in_place ? may_run_now(loop, task, ctx) : 0;
    if (ok < 0)
        return -1;
    if (ok)
        return run_in_place(loop, NULL, arg, ctx, task);
    PyObject *cb = conntask_bound_wakeup(task);
    if (cb == NULL)
        return -1;
    int rc = wake_queue(loop, cb, arg, ctx);
    Py_DECREF(cb);
    return rc;
}

int
wake_read(PyObject *waiter)
{
    if (waiter_check(waiter))
        return waiter_finish(waiter, 1);
    /* Another future (a subclass's arm_waiter): set_result(None) unless done. */
    PyObject *done = PyObject_CallMethodNoArgs(waiter, s_done);
    int rc = done == NULL ? -1 : PyObject_IsTrue(done);
    Py_XDECREF(done);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    PyObject *r = PyObject_CallMethodOneArg(waiter, s_set_result, Py_None);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* --------------------------------------------------------------- init */

static PyObject *
import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *v = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return v;
}

static PyObject *
sp_wake_counts(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(KK)", n_in_place, n_queued);
}

static PyMethodDef wake_functions[] = {
    {"wake_counts", (PyCFunction)sp_wake_counts, METH_NOARGS,
     "wake_counts() -> (in_place, queued): read wake-ups whose task step ran where the "
     "receive completion was dispatched, and those queued instead (see native/wake.c)."},
    {NULL, NULL, 0, NULL},
};

int
wake_init(PyObject *module)
{
    current_task_fn = import_attr("asyncio", "current_task");
    if (current_task_fn == NULL)
        return -1;
    /* The C Task and the dict its enter_task checks; without the Task
     * (another implementation) nothing runs in place. */
    PyObject *t = import_attr("_asyncio", "Task");
    if (t != NULL && PyType_Check(t))
        task_type = (PyTypeObject *)t;
    else
        Py_XDECREF(t);
    PyErr_Clear();
    current_tasks = import_attr("_asyncio", "_current_tasks");
    if (current_tasks == NULL || !PyDict_CheckExact(current_tasks)) {
        PyErr_Clear();
        Py_CLEAR(current_tasks);
        enter_task_fn = import_attr("asyncio.tasks", "_enter_task");
        leave_task_fn = import_attr("asyncio.tasks", "_leave_task");
        if (enter_task_fn == NULL || leave_task_fn == NULL)
            return -1;
    }
    const InternName names[] = {
        {&s_call_soon, "call_soon"}, {&s_set_result, "set_result"}, {&s_done, "done"},
        {&s_call_exception_handler, "call_exception_handler"}, {&s_message, "message"},
        {&s_exception, "exception"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    PyObject *context = PyUnicode_InternFromString("context");
    kw_context = context == NULL ? NULL : PyTuple_Pack(1, context);
    Py_XDECREF(context);
    if (kw_context == NULL)
        return -1;
    return PyModule_AddFunctions(module, wake_functions);
}

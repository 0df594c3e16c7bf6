/*
 * selectfast.c -- UringSelector.select's common case in C.
 *
 * Why: the reactor loop asks its selector once per iteration (the C
 * _run_once, loopfast.c), and with the iteration's I/O in C
 * (Dispatcher.step) the select() frame around it was the loop's largest
 * Python cost left: about 2,000 instructions an iteration (callgrind), for a
 * few attribute reads, a timeout conversion and two lists.
 *
 * What: bind_selector(UringSelector) puts a C select() in the class, keeping
 * the Python one (zerg/_selector.py) as the reference, which it calls for
 * everything but the common case: polls to re-arm, a timeout that is not a
 * plain finite number, a subclass.  The common case is the reference's own
 * steps -- the timeout in ns (None: max_wait_ns; <= 0: 0; else at most
 * max_wait_ns and at least 1), a fresh _fired list, _on_select(ns) -- and an
 * iteration that fired no poll returns that empty list; one that did builds
 * the ready list with the reference's _ready_of(fired).
 *
 * Rules: as speedups.c.
 */
#include "speedups.h"

#include <math.h>

static PyTypeObject *sel_type;
static PyObject *ref_select;
static PyObject *s_rearm, *s_fired, *s_on_select, *s_max_wait_ns, *s_ready_of, *int_zero;

/* The timeout in ns, as the reference computes it: a new reference, or NULL
 * with no error set when the reference must decide (or with one). */
static PyObject *
timeout_ns(PyObject *self, PyObject *timeout)
{
    PyObject *maxo = PyObject_GetAttr(self, s_max_wait_ns);
    if (maxo == NULL)
        return NULL;
    if (timeout == Py_None)
        return maxo;
    if (!PyFloat_CheckExact(timeout) && !PyLong_CheckExact(timeout)) {
        Py_DECREF(maxo);
        return NULL;
    }
    long long maxns = PyLong_CheckExact(maxo) ? PyLong_AsLongLong(maxo) : -1;
    double t = PyFloat_AsDouble(timeout);
    if ((maxns == -1 || t == -1.0) && PyErr_Occurred())
        PyErr_Clear();      /* the reference raises what it raises */
    else if (maxns >= 0 && isfinite(t)) {
        if (t <= 0) {
            Py_DECREF(maxo);
            return Py_NewRef(int_zero);
        }
        double ns = t * 1e9;
        if (ns > (double)maxns)
            return maxo;
        Py_DECREF(maxo);
        return PyLong_FromLongLong(ns < 1.0 ? 1 : (long long)ns);
    }
    Py_DECREF(maxo);
    return NULL;
}

static PyObject *
sel_select(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = nargs ? args[0] : Py_None;
    if (nargs > 1 || kwnames != NULL || !Py_IS_TYPE(self, sel_type))
        return ref_call_kw(ref_select, self, args, nargs, kwnames);
    PyObject *rearm = PyObject_GetAttr(self, s_rearm);
    if (rearm == NULL)
        return NULL;
    int simple = PyList_CheckExact(rearm) && PyList_GET_SIZE(rearm) == 0;
    Py_DECREF(rearm);
    PyObject *ns = simple ? timeout_ns(self, timeout) : NULL;
    if (ns == NULL)
        return PyErr_Occurred() ? NULL : ref_call_kw(ref_select, self, args, nargs, NULL);
    PyObject *fired = PyList_New(0), *r = NULL;
    if (fired != NULL && PyObject_SetAttr(self, s_fired, fired) == 0) {
        PyObject *on = PyObject_GetAttr(self, s_on_select);
        r = on == NULL ? NULL : PyObject_CallOneArg(on, ns);
        Py_XDECREF(on);
    }
    Py_DECREF(ns);
    if (r == NULL) {
        Py_XDECREF(fired);
        return NULL;
    }
    Py_DECREF(r);
    if (PyList_GET_SIZE(fired) == 0)
        return fired;           /* zerg's own completions only: nothing ready */
    r = PyObject_CallMethodOneArg(self, s_ready_of, fired);
    Py_DECREF(fired);
    return r;
}

static PyMethodDef sel_methods[] = {
    {"select", (PyCFunction)(void (*)(void))sel_select, METH_FASTCALL | METH_KEYWORDS,
     "select(timeout=None): the iteration's I/O; the fds asyncio registered that are ready."},
    {NULL, NULL, 0, NULL},
};
static PyObject **sel_refs[] = {&ref_select};

/* bind_selector(UringSelector): select() in C; once per process. */
static PyObject *
sp_bind_selector(PyObject *Py_UNUSED(module), PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "bind_selector: a class");
        return NULL;
    }
    if (sel_type != NULL) {
        if ((PyTypeObject *)cls != sel_type) {
            PyErr_SetString(PyExc_RuntimeError, "bind_selector: already bound to another class");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (install_methods((PyTypeObject *)cls, sel_methods, sel_refs, N_METHODS(sel_methods)) < 0)
        return NULL;
    sel_type = (PyTypeObject *)Py_NewRef(cls);
    Py_RETURN_NONE;
}

/* selector_reference(): the Python select the C one replaced. */
static PyObject *
sp_selector_reference(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (ref_select == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "selector_reference: bind_selector() first");
        return NULL;
    }
    return Py_NewRef(ref_select);
}

static PyMethodDef selectfast_functions[] = {
    {"bind_selector", (PyCFunction)sp_bind_selector, METH_O,
     "bind_selector(UringSelector): its select() in C, the Python one kept as the reference."},
    {"selector_reference", (PyCFunction)sp_selector_reference, METH_NOARGS,
     "selector_reference(): the Python select() that bind_selector replaced."},
    {NULL, NULL, 0, NULL},
};

int
selectfast_init(PyObject *module)
{
    const InternName names[] = {
        {&s_rearm, "_rearm"}, {&s_fired, "_fired"}, {&s_on_select, "_on_select"},
        {&s_max_wait_ns, "max_wait_ns"}, {&s_ready_of, "_ready_of"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    int_zero = PyLong_FromLong(0);
    if (int_zero == NULL)
        return -1;
    return PyModule_AddFunctions(module, selectfast_functions);
}

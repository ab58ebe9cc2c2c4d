/* http_wrk.py's step-floor control: the least an exact per-step timer can
 * do, in C.  Handle._run with two clock reads, a busy sum and one histogram
 * increment in a C array, nothing else (errors are printed, not reported
 * through the loop: a benchmark, not a tool). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>
#include <math.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t off_cb, off_args, off_ctx;
    unsigned long long hist[1024];
    double busy;
} Run;

static inline double mono(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static PyObject *
run_vc(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Run *self = (Run *)op;
    PyObject *h = args[0];
    PyObject *cb = SLOT(h, self->off_cb), *cargs = SLOT(h, self->off_args), *ctx = SLOT(h, self->off_ctx);
    Py_INCREF(cb); Py_INCREF(cargs); Py_INCREF(ctx);
    double t0 = mono();
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        if (PyTuple_CheckExact(cargs))
            r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(cargs, 0), PyTuple_GET_SIZE(cargs), NULL);
        else
            r = PyObject_CallNoArgs(cb);
        PyContext_Exit(ctx);
    }
    double d = mono() - t0;
    self->busy += d;
    long i = (long)(d * 1e6);
    self->hist[i < 1024 ? i : 1023]++;
    Py_DECREF(cb); Py_DECREF(cargs); Py_DECREF(ctx);
    if (r == NULL) { PyErr_Print(); PyErr_Clear(); }
    else Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
run_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static Py_ssize_t off(PyObject *cls, const char *name)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    Py_ssize_t o = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return o;
}

static PyObject *
run_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *cls;
    if (!PyArg_ParseTuple(args, "O", &cls)) return NULL;
    Run *self = (Run *)type->tp_alloc(type, 0);
    self->vectorcall = run_vc;
    self->off_cb = off(cls, "_callback");
    self->off_args = off(cls, "_args");
    self->off_ctx = off(cls, "_context");
    return (PyObject *)self;
}

static PyTypeObject RunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "step_floor.Run",
    .tp_basicsize = sizeof(Run),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(Run, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = run_get,
    .tp_new = run_new,
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "step_floor", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_step_floor(void)
{
    if (PyType_Ready(&RunType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    PyModule_AddObjectRef(m, "Run", (PyObject *)&RunType);
    return m;
}

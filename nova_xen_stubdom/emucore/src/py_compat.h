/*
 * py_compat.h - the few CPython 3.9/3.10 C-API calls module.c uses, for
 * CPython 3.6 to 3.8 (dom0 of XCP-ng 8.3 runs Python 3.6).
 *
 * Each shim is defined only below the version that added the real call,
 * so newer interpreters compile exactly the code they always did.
 */
#ifndef EMU_PY_COMPAT_H
#define EMU_PY_COMPAT_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
/* Py_NewRef, PyModule_AddObjectRef and the immutable-type flag: 3.10 */
static inline PyObject *emu_compat_newref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#define Py_NewRef(o) emu_compat_newref((PyObject *)(o))

static inline int PyModule_AddObjectRef(PyObject *m, const char *name,
                                        PyObject *value)
{
    /* PyModule_AddObject steals the reference only on success */
    Py_INCREF(value);
    if (PyModule_AddObject(m, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

/* before 3.10 a type from a spec is mutable; nothing to ask for */
#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif
#endif /* < 3.10 */

#if PY_VERSION_HEX < 0x03090000
/* PyType_FromModuleAndSpec and PyModule_AddType: 3.9.  The type does not
 * record its module before 3.9; module.c never asks it for it. */
static inline PyObject *PyType_FromModuleAndSpec(PyObject *Py_UNUSED(m),
                                                 PyType_Spec *spec,
                                                 PyObject *bases)
{
    return bases ? PyType_FromSpecWithBases(spec, bases)
                 : PyType_FromSpec(spec);
}

static inline int PyModule_AddType(PyObject *m, PyTypeObject *type)
{
    const char *name = strrchr(type->tp_name, '.');
    name = name ? name + 1 : type->tp_name;
    return PyModule_AddObjectRef(m, name, (PyObject *)type);
}
#endif /* < 3.9 */

#endif /* EMU_PY_COMPAT_H */

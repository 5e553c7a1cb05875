"""Custom ops: each as a reference (``x_ref``), a dispatching function (``x``) and a module."""

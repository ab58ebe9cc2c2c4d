"""The bundled demo service and the guided tour ``loopscope demo`` gives of it."""

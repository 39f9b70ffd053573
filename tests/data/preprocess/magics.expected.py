# Converted by fairing from magics.ipynb; edit the notebook, not this file.
import sys as _fairing_sys, os as _fairing_os
# .fairing/nbshim: runtime for !cmd and cell magics, and (unless the requirements install IPython)
# a stand-in IPython.display that prints a text form.
_fairing_sys.path.insert(0, _fairing_os.path.join(_fairing_os.path.dirname(_fairing_os.path.abspath(__file__)), '.fairing', 'nbshim'))
from fairing_nb import get_ipython
from IPython.display import display
_fairing_ip = get_ipython()

# cell 2
import os
import sys

# cell 3
_fairing_ip.script(['bash'], 'echo only in IPython\n')

# cell 4
total = 0
for i in range(3):
    _fairing_ip.time_start(); total += i; _fairing_ip.time_stop()
    _fairing_ip.system('echo step')
if total:
    _fairing_ip.system('echo never alone')
    print('total', total)
else:
    _fairing_ip.system('ls')

# cell 5
listing = _fairing_ip.getoutput('ls')
note = '''
!kept inside a string
%also kept
'''
ratio = (10
         % 3)
print(note.strip().splitlines(), ratio)

# cell 7
_fairing_ip.time_start()
print('timed cell keeps its body')
_fairing_ip.time_stop()

# cell 8
print('args', sys.argv[1:])
print('done')

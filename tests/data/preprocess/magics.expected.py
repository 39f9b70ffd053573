# Converted by fairing from magics.ipynb; edit the notebook, not this file.

# cell 2
import os
import sys

# cell 4
total = 0
for i in range(3):
    pass
if total:
    print('total', total)
else:
    pass

# cell 5
note = '''
!kept inside a string
%also kept
'''
ratio = (10
         % 3)
print(note.strip().splitlines(), ratio)

# cell 8
print('args', sys.argv[1:])
print('done')

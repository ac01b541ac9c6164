#!/usr/bin/env python3
"""Render README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which we cannot install).

`python tools/readme.py` writes README.md; `--check` exits 1 when README.md differs from the notebook.
Cells flagged `#| hide` are dropped, `#|` directives are stripped, stream/text outputs are kept.
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def _src(c): return c['source'] if isinstance(c['source'], str) else ''.join(c['source'])

def _text_outputs(c):
    out = []
    for o in c.get('outputs', []):
        if o.get('output_type') == 'stream': out.append(''.join(o['text']))
        elif 'data' in o and 'text/markdown' in o['data']: out.append(('md', ''.join(o['data']['text/markdown'])))
        elif 'data' in o and 'text/plain' in o['data']: out.append(''.join(o['data']['text/plain']))
    return out

def render(nb_path=root/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb['cells']:
        lines = _src(c).splitlines()
        dirs = [l for l in lines if l.startswith('#|')]
        if any(d.replace(' ', '') in ('#|hide', '#|exporti') for d in dirs): continue
        body = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if c['cell_type'] == 'markdown': parts.append(body.replace('](images/', '](nbs/images/'))   # links relative to nbs/
        elif c['cell_type'] == 'code':
            if body: parts.append(f'```python\n{body}\n```')
            for o in _text_outputs(c):
                if isinstance(o, tuple): parts.append(o[1].strip())
                elif o.strip(): parts.append(f'```\n{o.rstrip()}\n```')
    return '<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `make readme` (python tools/readme.py) and commit.')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text); print(f'wrote {readme}')

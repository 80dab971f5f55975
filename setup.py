"Packaging for editlab, driven by nbdev's settings.ini."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
c = cfg['DEFAULT']
licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
lic = licenses[c['license']]
reqs = c.get('requirements', '').split()
dev_reqs = c.get('dev_requirements', '').split()
scripts = [s for s in c.get('console_scripts', '').split() if s]

setuptools.setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    author=c['author'], author_email=c['author_email'], license=lic[0], url=c['git_url'],
    classifiers=['Development Status :: 3 - Alpha', 'Intended Audience :: Science/Research',
                 'License :: ' + lic[1], 'Natural Language :: English',
                 'Programming Language :: Python :: 3'],
    packages=setuptools.find_packages(include=['editlab', 'editlab.*']),
    package_data={'editlab': ['assets/*.json', 'assets/*.txt', 'assets/samples/*/*']}, include_package_data=True,
    python_requires='>=' + c['min_python'], install_requires=reqs, extras_require={'dev': dev_reqs},
    entry_points={'console_scripts': scripts, 'nbdev': [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
    zip_safe=False)

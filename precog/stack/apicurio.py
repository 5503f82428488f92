"""The local stack's Schema Registry: Apicurio Registry, built once with Maven (Quarkus).

Apicurio's ``apicurio-registry-app`` jar on Maven Central is a Quarkus application that still
needs Quarkus' build step, so :func:`install_apicurio` writes a small Maven project into the
cache whose only dependency is that jar and runs ``quarkus-maven-plugin:build`` on it; the
result is ``target/precog-apicurio-registry-1-runner.jar`` with its ``lib/``. Version
2.4.2.Final (Quarkus 2.16.4.Final) is the newest whose modules Maven Central serves here
(3.x and 2.5/2.6 lack ``apicurio-registry-schema-util-provider`` and others). Two things
the project adapts, both in the generated pom:

- ``org.everit.json.schema`` 1.14.2 (JSON Schema support) comes from jitpack.io, which is not
  reachable; ``com.github.erosb:everit-json-schema`` 1.14.2 on Maven Central is the same
  library (same packages) and replaces it; the ``external_repos`` profile of Apicurio's
  parent (jitpack, Confluent's repository) is switched off with ``-DskipDefault``.
- the Quarkus extension ``apicurio-common-app-components-config-index`` has no deployment
  artifact on Maven Central; it only lists the properties an admin may change at run time
  (``/apis/registry/v2/admin/config/properties``). It is left out and
  :data:`NO_DYNAMIC_CONFIG_JAVA` provides an empty list instead: every property is static.

Storage is Apicurio's SQL storage on an H2 *file* database in the stack home, so subjects,
ids and compatibility rules survive a restart like Kafka's topics do.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from precog.errors import StackError
from precog.stack.install import find_maven, run_step
from precog.stack.layout import Echo, Layout

#: Apicurio 2.4.2.Final is built with this Quarkus (its parent pom's ``quarkus.version``)
QUARKUS_VERSION = "2.16.4.Final"
EVERIT_SUBSTITUTE = ("com.github.erosb", "everit-json-schema", "1.14.2")
COMPILER_PLUGIN_VERSION = "3.13.0"
BUILD_ARTIFACT = "precog-apicurio-registry"

NO_DYNAMIC_CONFIG_JAVA = """\
package precog.stack;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/** No property is editable at run time: replaces the config-index extension (see pom). */
@ApplicationScoped
public class NoDynamicConfig {
    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
"""

#: Apicurio's classes are a dependency here, not the application itself: Quarkus must index
#: the jar to find its beans and REST resources
APPLICATION_PROPERTIES = """\
quarkus.index-dependency.registry-app.group-id=io.apicurio
quarkus.index-dependency.registry-app.artifact-id=apicurio-registry-app
"""


def apicurio_pom(version: str) -> str:
    """The Maven project that turns ``apicurio-registry-app`` into a runnable Quarkus jar.

    >>> pom = apicurio_pom("2.4.2.Final")
    >>> "<artifactId>apicurio-registry-app</artifactId><version>2.4.2.Final</version>" in pom
    True
    >>> "quarkus-maven-plugin</artifactId><version>2.16.4.Final" in pom
    True
    """
    g, a, v = EVERIT_SUBSTITUTE
    excluded = [("io.apicurio", "apicurio-common-app-components-config-index"),
                ("com.github.everit-org.json-schema", "org.everit.json.schema")]
    exclusions = "".join(f"<exclusion><groupId>{eg}</groupId><artifactId>{ea}</artifactId>"
                         "</exclusion>" for eg, ea in excluded)
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>precog.local</groupId><artifactId>{BUILD_ARTIFACT}</artifactId>"
        "<version>1</version><properties>"
        "<project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>"
        "<dependencyManagement><dependencies><dependency><groupId>io.apicurio</groupId>"
        f"<artifactId>apicurio-registry</artifactId><version>{version}</version><type>pom</type>"
        "<scope>import</scope></dependency></dependencies></dependencyManagement>"
        "<dependencies><dependency><groupId>io.apicurio</groupId>"
        f"<artifactId>apicurio-registry-app</artifactId><version>{version}</version>"
        f"<exclusions>{exclusions}</exclusions></dependency>"
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        "</dependency></dependencies>"
        "<build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>"
        "<artifactId>maven-compiler-plugin</artifactId>"
        f"<version>{COMPILER_PLUGIN_VERSION}</version>"
        "<configuration><release>17</release></configuration></plugin>"
        "<plugin><groupId>io.quarkus</groupId><artifactId>quarkus-maven-plugin</artifactId>"
        f"<version>{QUARKUS_VERSION}</version>"
        "<executions><execution><goals><goal>build</goal></goals></execution></executions>"
        "</plugin></plugins></build></project>\n"
    )


def install_apicurio(layout: Layout, echo: Echo) -> Path:
    """Build Apicurio Registry into the cache once; returns the runnable jar.

    Skipped when the jar and the ``.complete`` marker exist; a failed build leaves no marker,
    so the next ``up`` builds again. Maven's output goes to ``mvn.log`` beside the pom.
    """
    project = layout.apicurio_build
    done = project / ".complete"
    jar = layout.apicurio_jar
    if done.exists() and jar.exists():
        return jar
    mvn = find_maven()
    if project.exists():
        shutil.rmtree(project)
    src = project / "src" / "main"
    (src / "java" / "precog" / "stack").mkdir(parents=True)
    (src / "resources").mkdir(parents=True)
    (project / "pom.xml").write_text(apicurio_pom(layout.apicurio_version))
    (src / "java" / "precog" / "stack" / "NoDynamicConfig.java").write_text(NO_DYNAMIC_CONFIG_JAVA)
    (src / "resources" / "application.properties").write_text(APPLICATION_PROPERTIES)
    echo(f"schema-registry: building io.apicurio:apicurio-registry-app:{layout.apicurio_version}"
         f" with Maven (quarkus-maven-plugin {QUARKUS_VERSION} build) in {project};"
         " a few minutes the first time")
    t0 = time.monotonic()
    run_step([mvn, "-B", "-q", "-Dstyle.color=never", "-DskipDefault", "-f",
              str(project / "pom.xml"), "package"],
             log=project / "mvn.log",
             what=f"build of Apicurio Registry {layout.apicurio_version}")
    if not jar.exists():
        raise StackError(f"build of Apicurio Registry failed: {jar} not written"
                         f" (see {project / 'mvn.log'})")
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    echo(f"schema-registry: built {jar.name} in {time.monotonic() - t0:.0f}s")
    return jar


def schema_registry_command(layout: Layout, java_home: Path, heap: str, port: int) -> list[str]:
    """The Apicurio JVM: H2 file storage in the home, HTTP on 127.0.0.1:``port`` only.

    >>> cmd = schema_registry_command(Layout(Path("/h"), Path("/c"), "k", "e"), Path("/j"),
    ...                               "256m", 18081)
    >>> cmd[0], cmd[-1]
    ('/j/bin/java', '/c/apicurio-registry-2.4.2.Final/target/precog-apicurio-registry-1-runner.jar')
    >>> "-Dquarkus.datasource.jdbc.url=jdbc:h2:file:/h/schema-registry/data/registry" in cmd
    True
    """
    data = layout.dir("schema-registry") / "data"
    return [
        str(java_home / "bin" / "java"), f"-Xmx{heap}", "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
        f"-Dquarkus.http.port={port}", "-Dquarkus.http.host=127.0.0.1",
        f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{data / 'registry'}",
        # the access log and the UI are not needed; the data dir also marks our process
        "-Dquarkus.http.access-log.enabled=false",
        "-jar", str(layout.apicurio_jar),
    ]
